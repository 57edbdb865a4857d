"""Conversation data in the ShareGPT4V / LLaVA layout: a JSON list of
{"id", "image": path under image_path (absent for text-only records), "conversations": [{"from":
"human" | "gpt", "value": "<image>\\n..."}, ...]}.

A record may name its `task` (refer, vqa, ...: written as "[refer] ..." by MiniGPT-v2's template);
`task:` in the config gives one to records that name none.

One builder serves ShareGPT4V (the GPT-4V file and the ShareCaptioner file share the layout) and
LLaVA-Instruct (detail, conversation and complex-reasoning files). Every assistant turn is trained on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from minigpt.common.registry import register_builder
from minigpt.datasets.annotations import load_records, optional_image, parse_conversation, require
from minigpt.datasets.builders.base import AnnotationBuilder, AnnotationConfig


def parse_sharegpt_records(ann_path: str) -> list[dict]:
    """-> records {"id", "image" or None, "turns", "task", "notes"} (notes: <image> marker problems), and
    "box" when the record has one: the target's pixel corners, which eval.py's refer_accuracy scores."""
    records = []
    for index, record in enumerate(load_records(ann_path)):
        record_id = str(require(record, "id", ann_path, index))
        turns, notes = parse_conversation(require(record, "conversations", ann_path, index), ann_path, index, record_id)
        records.append({"id": record_id, "image": optional_image(record, ann_path, index, record_id), "turns": turns, "task": record.get("task"),
                        "notes": notes, **({"box": record["box"]} if "box" in record else {})})
    return records


@dataclass
class ConversationConfig(AnnotationConfig):
    task: Optional[str] = None  # the task of records that name none (e.g. vqa)


@register_builder("sharegpt4v", "llava_instruct", "llava_detail", "llava_reason", "llava_conversation")
class ConversationBuilder(AnnotationBuilder):
    config_class = ConversationConfig

    def parse(self, ann_path):
        return parse_sharegpt_records(ann_path)

    def make_sample(self, record, rng):
        return {"turns": record["turns"], "task": record["task"] or self.cfg.task}

    def extra_reference(self, record):
        return {"box": record["box"]} if "box" in record else {}
