"""Conversations in the `messages` + `images` layout of LLaMA-Factory (sharegpt formatting) and ms-swift:

    {"messages": [{"role": "system" | "user" | "assistant", "content": "<image>What is this?"}, ...],
     "images": ["photos/cat.jpg"]}

in a JSON, JSON Lines, Parquet or Arrow file, or a folder written by `datasets.save_to_disk`. An image is
a path under `build_info.image_path` (or absolute), or a Hugging Face Image value {"bytes", "path"}.
`columns` and `tags` map other names, as LLaMA-Factory's dataset_info.json does; with `dataset_info` and
`dataset`, an entry of such a file is used by name:

    datasets:
      my_data:
        builder: messages
        dataset_info: data/dataset_info.json     # LLaMA-Factory's registry of data sets
        dataset: mllm_demo                       # its file, columns and tags come from the entry
        build_info: {image_path: data}

System messages are left out: the prompt template's system text is fixed. Our prompts hold one image
per conversation, so a record with several images is refused, naming it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from minigpt.common.paths import resolve_path
from minigpt.common.registry import register_builder
from minigpt.datasets.annotations import AnnotationError, parse_conversation
from minigpt.datasets.builders.base import AnnotationBuilder, AnnotationConfig
from minigpt.datasets.table_files import read_table

DEFAULT_COLUMNS = {"messages": "messages", "images": "images"}
DEFAULT_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                "system_tag": "system"}


@dataclass
class MessagesConfig(AnnotationConfig):
    columns: dict = field(default_factory=dict)  # our name (messages, images) -> the file's column
    tags: dict = field(default_factory=dict)  # role_tag, content_tag, user_tag, assistant_tag, system_tag
    dataset_info: Optional[str] = None  # a LLaMA-Factory dataset_info.json ...
    dataset: Optional[str] = None  # ... and the entry to use


def dataset_info_entry(info_path: str, name: str) -> tuple[Path, dict, dict]:
    """(data file, columns, tags) of entry `name` in a LLaMA-Factory dataset_info.json."""
    path = resolve_path(info_path)
    entries = json.loads(path.read_text())
    if name not in entries:
        raise AnnotationError(path, None, f"no entry '{name}' (it has {', '.join(sorted(entries))})")
    entry = entries[name]
    if entry.get("formatting", "alpaca") != "sharegpt":
        raise AnnotationError(path, None, f"entry '{name}': formatting {entry.get('formatting', 'alpaca')!r}; "
                                          "only sharegpt (messages) data holds conversations with images")
    if "file_name" not in entry:
        raise AnnotationError(path, None, f"entry '{name}' has no file_name (hub data sets are not downloaded)")
    data_file = path.parent / entry["file_name"]
    if not data_file.exists():
        raise AnnotationError(path, None, f"entry '{name}': its file_name {data_file} does not exist")
    columns = {key: entry["columns"][key] for key in ("messages", "images") if key in entry.get("columns", {})}
    return data_file, columns, dict(entry.get("tags", {}))


def record_image(images, path, index: int, record_id) -> tuple[str | None, bytes | None]:
    """(image path, image bytes) of a record's images value: none, or exactly one."""
    images = [] if images is None else [images] if isinstance(images, (str, dict)) else list(images)
    if len(images) > 1:
        raise AnnotationError(path, index, f"field 'images' holds {len(images)} images; our prompts hold one per "
                                           "conversation (split the record)", record_id)
    if not images:
        return None, None
    image = images[0]
    if isinstance(image, dict):  # Hugging Face's Image type
        if image.get("bytes"):
            return image.get("path"), image["bytes"]
        image = image.get("path")
    if not isinstance(image, str) or not image:
        raise AnnotationError(path, index, f"field 'images' must name an image file, got {image!r}", record_id)
    return image, None


@register_builder("messages", "llamafactory", "swift")
class MessagesBuilder(AnnotationBuilder):
    config_class = MessagesConfig

    def ann_path(self) -> str:
        if self.cfg.dataset_info:
            return str(dataset_info_entry(self.cfg.dataset_info, self.cfg.dataset)[0])
        return super().ann_path()

    def mapping(self) -> tuple[dict, dict]:
        columns, tags = dict(DEFAULT_COLUMNS), dict(DEFAULT_TAGS)
        if self.cfg.dataset_info:
            _, entry_columns, entry_tags = dataset_info_entry(self.cfg.dataset_info, self.cfg.dataset)
            columns.update(entry_columns)
            tags.update(entry_tags)
        columns.update(self.cfg.columns or {})
        tags.update(self.cfg.tags or {})
        return columns, tags

    def parse(self, ann_path):
        columns, tags = self.mapping()
        roles = {tags["user_tag"]: "human", tags["assistant_tag"]: "gpt"}
        records = []
        for index, row in enumerate(read_table(ann_path, [columns["messages"]])):
            record_id = str(row.get("id", index))
            messages = row[columns["messages"]]
            if not isinstance(messages, list):
                raise AnnotationError(ann_path, index, f"column '{columns['messages']}' must be a list of messages",
                                      record_id)
            turns = []
            for number, message in enumerate(messages):
                role = message.get(tags["role_tag"]) if isinstance(message, dict) else None
                if role == tags["system_tag"]:
                    continue
                if role not in roles:
                    raise AnnotationError(ann_path, index, f"{columns['messages']}[{number}].{tags['role_tag']} is "
                                                           f"{role!r}, expected {' or '.join(roles)}", record_id)
                turns.append({"from": roles[role], "value": message.get(tags["content_tag"])})
            parsed, notes = parse_conversation(turns, ann_path, index, record_id)
            image, image_bytes = record_image(row.get(columns["images"]), ann_path, index, record_id)
            records.append({"id": record_id, "image": image, "image_bytes": image_bytes, "turns": parsed,
                            "task": row.get("task"), "notes": notes})
        return records

    def make_sample(self, record, rng):
        return {"turns": record["turns"], "task": record["task"]}
