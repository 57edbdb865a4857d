"""Visual question answering: VQAv2 / OK-VQA, A-OKVQA and GQA layouts, and OCR-VQA.

    vqav2, okvqa  [{"question_id", "image", "question", "answer": [human answers, repeats allowed]}]
                  (the one-file layout LAVIS distributes; the official files split questions and answers)
    aokvqa        [{"question_id", "image_id" (COCO 2017: <image_id:012>.jpg) or "image", "question",
                  "direct_answers": [...], ...}], as released
    gqa           {"<question_id>": {"imageId", "question", "answer", ...}} as released
                  (train_balanced_questions.json), or a list of {"image", "question", "answer"}
    vizwiz        [{"image", "question", "answers": [{"answer", "answer_confidence"}], ...}] as released
                  (train.json, val.json); about a quarter of the questions are answered "unanswerable"
    ocrvqa        {"<key>": {"imageURL", "questions": [...], "answers": [...], "split": 1|2|3}}, images
                  `<key><extension of imageURL>`; split 1 is train.

With several human answers, one is drawn per sample in proportion to how many people gave it. eval.py
asks each question once, in a fixed wording, and scores VQAv2 soft accuracy against all human answers
(exact match for GQA and OCR-VQA, which have one answer). VizWiz's question also asks for
"unanswerable" when the image does not tell.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from minigpt.common.errors import InputError
from minigpt.common.paths import resolve_path
from minigpt.common.registry import register_builder
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.datasets.annotations import AnnotationError, load_json, load_records, require, require_text, text_value
from minigpt.datasets.builders.base import AnnotationBuilder, AnnotationConfig, eval_item, fixed_question
from minigpt.datasets.instructions import VQA, phrase

ANSWER_FIELD = {"vqav2": "answer", "okvqa": "answer", "aokvqa": "direct_answers", "gqa": "answer",
                "vizwiz": "answers"}
LAYOUT_OF_NAME = {"ok_vqa": "okvqa", "okvqa": "okvqa", "aok_vqa": "aokvqa", "aokvqa": "aokvqa", "gqa": "gqa",
                  "coco_vqa": "vqav2", "vqav2": "vqav2", "vizwiz": "vizwiz"}
UNANSWERABLE_QUESTION = ("Based on the image, answer this question with a single word or phrase, or with "
                         "'unanswerable' when the image does not tell: {}")


@dataclass
class VQAConfig(AnnotationConfig):
    layout: Optional[str] = None  # vqav2 | okvqa | aokvqa | gqa | vizwiz (default: from the data set's name)


def image_of(record: dict, ann_path, index: int) -> str:
    """The image path of a question: "image", else GQA's "imageId", else A-OKVQA's COCO 2017 "image_id"."""
    if "image" in record:
        return record["image"]
    if "imageId" in record:
        return f"{record['imageId']}.jpg"
    if "image_id" in record:
        return f"{int(record['image_id']):012d}.jpg"
    raise AnnotationError(ann_path, index, "missing field 'image' (or 'imageId' / 'image_id')", record.get("question_id"))


def answer_text(answer, ann_path, index: int, field_name: str) -> str:
    """A human answer: a string, or VizWiz's {"answer", "answer_confidence"}."""
    if isinstance(answer, dict):
        if "answer" not in answer:
            raise AnnotationError(ann_path, index, f"field '{field_name}' has no 'answer'")
        return text_value(answer["answer"], f"{field_name}.answer", ann_path, index)
    return text_value(answer, field_name, ann_path, index)


def vqa_sample(question: str, answers: list[str], rng) -> dict:
    counts = collections.Counter(answers)
    answer = rng.choices(list(counts), weights=list(counts.values()))[0]
    return {"turns": [(USER, phrase(VQA, rng, question)), (ASSISTANT, answer)], "task": "vqa"}


class VQAEvaluation:
    """eval.py's view of a question-answering builder: each record's "question" once, asked in a fixed
    wording, with its "answers" as the reference."""

    task: str | None = "vqa"

    def eval_question(self) -> str:
        return VQA[1]

    def eval_items(self, records, instruction=None):
        wording = self.eval_question()
        return [eval_item(record["id"], record, self.task, [(USER, fixed_question(instruction, wording, record["question"]))],
                          {"answers": record["answers"]}) for record in records]


@register_builder("vqa", "ok_vqa", "okvqa", "aok_vqa", "gqa", "coco_vqa", "vizwiz")
class VQABuilder(VQAEvaluation, AnnotationBuilder):
    config_class = VQAConfig

    def layout(self) -> str | None:
        return self.cfg.layout or LAYOUT_OF_NAME.get(self.cfg.builder or self.name)

    def eval_question(self) -> str:
        return UNANSWERABLE_QUESTION if self.layout() == "vizwiz" else VQA[1]

    def eval_metric(self):
        return "exact_match" if self.layout() == "gqa" else "vqa_accuracy"

    def parse(self, ann_path):
        layout = self.layout()
        if layout not in ANSWER_FIELD:
            raise InputError(f"datasets.{self.name}.layout: '{layout}' is not one of {', '.join(ANSWER_FIELD)}")
        answer_field = ANSWER_FIELD[layout]
        data = load_records(ann_path) if str(ann_path).endswith(".jsonl") else load_json(ann_path)
        if isinstance(data, dict):  # GQA as released: keyed by question id
            data = [{"question_id": key, **value} for key, value in data.items() if isinstance(value, dict)]
        if not isinstance(data, list):
            raise AnnotationError(ann_path, None, "expected a list of questions, or an object keyed by question id")
        records = []
        for index, record in enumerate(data):
            question = require_text(record, "question", ann_path, index)
            answers = require(record, answer_field, ann_path, index)
            if not isinstance(answers, list):
                answers = [text_value(answers, answer_field, ann_path, index, record.get("question_id"))]
            if not answers:
                raise AnnotationError(ann_path, index, f"field '{answer_field}' has no answer", record.get("question_id"))
            answers = [answer_text(answer, ann_path, index, f"{answer_field}[{number}]") for number, answer in enumerate(answers)]
            records.append({"id": str(record.get("question_id", index)), "image": image_of(record, ann_path, index),
                            "question": question, "answers": answers})
        return records

    def make_sample(self, record, rng):
        return vqa_sample(record["question"], record["answers"], rng)


@dataclass
class OCRVQAConfig(AnnotationConfig):
    splits: List[int] = field(default_factory=lambda: [1])  # 1 train, 2 validation, 3 test


@register_builder("ocrvqa")
class OCRVQABuilder(VQAEvaluation, AnnotationBuilder):
    config_class = OCRVQAConfig

    def parse(self, ann_path):
        path = resolve_path(ann_path)
        data = load_json(path)
        if not isinstance(data, dict):
            raise AnnotationError(path, None, "expected an object keyed by book id")
        records = []
        for index, (key, entry) in enumerate(data.items()):
            if require(entry, "split", path, index) not in self.cfg.splits:
                continue
            questions, answers = require(entry, "questions", path, index), require(entry, "answers", path, index)
            if len(questions) != len(answers):
                raise AnnotationError(path, index, f"{len(questions)} questions but {len(answers)} answers", key)
            extension = Path(require(entry, "imageURL", path, index)).suffix or ".jpg"
            for number, (question, answer) in enumerate(zip(questions, answers)):
                records.append({"id": f"{key}-{number}", "image": f"{key}{extension}", "question": question,
                                "answers": [str(answer)]})
        return records

    def make_sample(self, record, rng):
        return vqa_sample(record["question"], record["answers"], rng)
