"""Benchmarks whose answer comes from a fixed set: VSR (is a spatial statement true?), Hateful Memes (is a
meme hateful?) and IconQA (which of several choices?).

    vsr            JSON lines (or a JSON list) of {"image", "caption", "label": 1 | 0}, as VSR releases
                   its splits (the zero-shot test split: test.jsonl); answer "true" or "false"
    hateful_memes  JSON lines of {"id", "img": "img/01235.png", "label": 1 | 0, "text"}, as released
                   (train.jsonl, dev.jsonl); answer "yes" or "no"; image_path is the folder holding img/
    iconqa         MiniGPT-v2's converted choose_txt file, a list of {"image_id", "question", "choices",
                   "answer": the right choice's text}, or the released problems.json, {"<pid>": {"question",
                   "choices", "answer": the right choice's index, "ques_type", "split"}}, of which the
                   choose_txt questions of `split` are read; images at <image_path>/<image_id or pid>/image.png

All three train as plain question-answer samples. eval.py scores VSR and Hateful Memes by exact match
of the generated answer. IconQA is scored as MiniGPT-v2 scores it: nothing is generated; each choice is
scored by the model's loss on it as the answer, and the most likely choice is the prediction
(minigpt/inference/chat.py, choose_answers).
"""
from __future__ import annotations

from dataclasses import dataclass

from minigpt.common.registry import register_builder
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.datasets.annotations import AnnotationError, load_json, load_records, require, require_text
from minigpt.datasets.builders.base import AnnotationBuilder, AnnotationConfig
from minigpt.datasets.builders.vqa_builders import VQAEvaluation


class FixedWordingBuilder(VQAEvaluation, AnnotationBuilder):
    """Records {"id", "image", "question", "answers": [answer], "choices"?} asked in one wording, in
    training and evaluation alike ("{}" marks the record's question, statement or meme text)."""

    wording = "{}"

    def eval_question(self) -> str:
        return self.wording

    def make_sample(self, record, rng):
        return {"turns": [(USER, self.wording.format(record["question"])), (ASSISTANT, record["answers"][0])],
                "task": self.task}


class LabelledBuilder(FixedWordingBuilder):
    """JSON lines whose 0/1 `label` picks one of two answers about the record's text."""

    image_field, text_field = "image", "caption"
    label_answers = ("true", "false")  # for label 1, for label 0

    def parse(self, ann_path):
        records = []
        for index, record in enumerate(load_records(ann_path)):
            label = require(record, "label", ann_path, index)
            if label not in (0, 1):
                raise AnnotationError(ann_path, index, f"field 'label' must be 0 or 1, got {label!r}", record.get("id"))
            records.append({"id": str(record.get("id", index)), "image": require_text(record, self.image_field, ann_path, index),
                            "question": require_text(record, self.text_field, ann_path, index),
                            "answers": [self.label_answers[0] if label == 1 else self.label_answers[1]]})
        return records


@register_builder("vsr")
class VSRBuilder(LabelledBuilder):
    wording = "Based on the image, is this statement true or false? {}"


@register_builder("hateful_memes", "hm")
class HatefulMemesBuilder(LabelledBuilder):
    wording = "This image shows the words '{}'. Is it hateful? Answer yes or no."
    task = None  # MiniGPT-v2 asks it without a task identifier
    image_field, text_field = "img", "text"
    label_answers = ("yes", "no")


@dataclass
class IconQAConfig(AnnotationConfig):
    # Of the released problems.json: which problems are read. image_path must be that split's folder.
    split: str = "train"  # train | val | test
    ques_type: str = "choose_txt"  # the multiple-choice questions with text choices


@register_builder("iconqa", "iconvqa")
class IconQABuilder(FixedWordingBuilder):
    config_class = IconQAConfig
    wording = "Based on the image, answer this question with a short answer: {}"

    def parse(self, ann_path):
        data = load_json(ann_path)
        released = isinstance(data, dict)  # problems.json keyed by problem id, answers as indices
        if released:
            problems = [(None, pid, {**problem, "id": pid}) for pid, problem in data.items() if isinstance(problem, dict)
                        and problem.get("ques_type") == self.cfg.ques_type and problem.get("split") == self.cfg.split]
            if not problems:
                raise AnnotationError(ann_path, None, f"no problem has ques_type '{self.cfg.ques_type}' and split "
                                      f"'{self.cfg.split}' (the section's ques_type and split)")
        elif isinstance(data, list):  # MiniGPT-v2's converted file, answers as text
            problems = [(index, str(require(record, "image_id", ann_path, index)), record) for index, record in enumerate(data)]
        else:
            raise AnnotationError(ann_path, None, "expected a list of questions, or problems.json keyed by problem id")
        records = []
        for index, problem_id, problem in problems:
            choices = require(problem, "choices", ann_path, index)
            if not isinstance(choices, list) or len(choices) < 2:
                raise AnnotationError(ann_path, index, f"field 'choices' must list at least two, got {choices!r}", problem_id)
            answer = require(problem, "answer", ann_path, index)
            if released and (type(answer) is not int or not 0 <= answer < len(choices)):
                raise AnnotationError(ann_path, index, f"field 'answer' must be the index of one of the {len(choices)} "
                                      f"choices, got {answer!r}", problem_id)
            if not released and answer not in choices:
                raise AnnotationError(ann_path, index, f"field 'answer' must be one of the choices {choices}, got "
                                      f"{answer!r}", problem_id)
            records.append({"id": problem_id, "image": f"{problem_id}/image.png",
                            "question": require_text(problem, "question", ann_path, index),
                            "answers": [str(choices[answer] if released else answer)],
                            "choices": [str(choice) for choice in choices]})
        return records
