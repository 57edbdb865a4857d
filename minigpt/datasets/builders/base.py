"""Dataset builders: one small class per data set, named in the registry, configured by one YAML.

A builder turns its `datasets.<name>` config section into a torch Dataset of template-free samples.
To add a data set: subclass AnnotationBuilder (or DatasetBuilder), implement `parse` (and, if needed,
`make_sample`), register it, and write minigpt/defaults/datasets/<name>/default.yaml. dataset/README.md
walks through an example. eval.py reads the same records through `eval_items`, which a builder
overrides when its benchmark asks a fixed question or keeps more than one reference per question.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from omegaconf import DictConfig
from torch.utils.data import Dataset

from minigpt.common import registry
from minigpt.common.schema import DatasetConfig
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.datasets.annotations import subsample
from minigpt.datasets.image_records import ImageRecordDataset
from minigpt.processors.image import CLIP_MEAN, CLIP_STD, Blip2ImageProcessor


def build_processor(section: DictConfig, split: str) -> Callable | None:
    """`vis_processor: {train: {name: blip2_image_train, image_size: 224}}` -> a processor instance."""
    options = section.get(split) or section.get("train")
    if options is None:
        return None
    options = dict(options)
    return registry.get("processor", options.pop("name"))(**options)


def inference_image_processor(sections: Iterable[DictConfig], image_size: int, mean: tuple = CLIP_MEAN,
                              std: tuple = CLIP_STD) -> Callable:
    """The eval image transform: the first data set's `vis_processor.eval` (or `.train`, as MiniGPT-4's
    eval configs write it), else a plain resize to `image_size` normalised with the vision tower's `mean`, `std`."""
    for section in sections:
        processor = build_processor(section.vis_processor, "eval")
        if processor is not None:
            return processor
    return Blip2ImageProcessor(image_size=image_size, mean=mean, std=std)


def build_dataset(name: str, cfg: DictConfig, split: str = "train", strict: bool = False) -> Dataset:
    """The data set of config section `datasets.<name>`, through its registered builder."""
    return registry.get("builder", cfg.builder or name)(name, cfg).build(split, strict)


class DatasetBuilder:
    config_class = DatasetConfig

    def __init__(self, name: str, cfg: DictConfig):
        self.name = name
        self.cfg = cfg
        self.vis_processor: Callable | None = None
        self.text_processor: Callable | None = None

    def build(self, split: str = "train", strict: bool = False) -> Dataset:
        self.vis_processor = build_processor(self.cfg.vis_processor, split)
        self.text_processor = build_processor(self.cfg.text_processor, split)
        return self.build_dataset(strict)

    def build_dataset(self, strict: bool) -> Dataset:
        raise NotImplementedError


@dataclass
class AnnotationConfig(DatasetConfig):
    subsample_count: Optional[int] = None  # keep at most this many records (drawn from subsample_seed)
    subsample_ids: Optional[Any] = None  # keep only these record ids: a list, or a file of ids
    subsample_seed: int = 0


class AnnotationBuilder(DatasetBuilder):
    """An annotation file (`build_info.ann_path`) whose records point into an image folder
    (`build_info.image_path`). Subclasses parse the file into records {"id", "image", ...}."""

    config_class = AnnotationConfig

    def parse(self, ann_path: str) -> list[dict]:
        raise NotImplementedError

    arrange = None  # optional (records, rng) -> records: select or repeat records anew for each pass

    def make_sample(self, record: dict, rng: random.Random) -> dict:
        """record -> {"turns": [(role, text), ...], "task": name or None}; default: the parsed turns."""
        return {"turns": record["turns"], "task": record.get("task")}

    def ann_path(self) -> str:
        return self.cfg.build_info.ann_path

    def image_path(self) -> str | None:
        return self.cfg.build_info.image_path

    def records(self) -> list[dict]:
        """The parsed annotation records, subsampled as configured (training and evaluation read these)."""
        records = self.parse(self.ann_path())
        return subsample(records, self.cfg.subsample_count, self.cfg.subsample_ids, self.cfg.subsample_seed)

    image_check = None  # optional (PIL image) -> reason to skip the sample, or None

    def build_dataset(self, strict: bool) -> ImageRecordDataset:
        return ImageRecordDataset(self.name, self.records(), self.image_path(), self.vis_processor,
                                  self.cleaned_sample, strict, source=self.ann_path(), arrange=self.arrange,
                                  image_check=self.image_check)

    def cleaned_sample(self, record: dict, rng: random.Random) -> dict:
        """make_sample, with `text_processor` (when the config sets one) applied to every answer."""
        sample = self.make_sample(record, rng)
        if self.text_processor is not None:
            sample["turns"] = [(role, self.text_processor(text) if role == ASSISTANT else text)
                               for role, text in sample["turns"]]
        return sample

    # ---- evaluation (eval.py) -------------------------------------------------------------------
    def eval_metric(self) -> str:
        """The metric (evaluation/metrics.py) eval.py scores this data set with unless `metric:` is set."""
        return "exact_match"

    def eval_items(self, records: list[dict], instruction: str | None = None) -> list[dict]:
        """Questions to answer and their references: {"id", "image", "task", "turns" (ending with the
        question), "reference": {...}}. By default one item per answer of each record's conversation,
        with the turns before it as history; `instruction` is used by builders that ask fixed questions."""
        items = []
        for record in records:
            sample = self.make_sample(record, random.Random(f"eval-{record['id']}"))
            turns = sample["turns"]
            answered = [i for i in range(1, len(turns)) if turns[i][0] == ASSISTANT and turns[i - 1][0] == USER]
            for number, index in enumerate(answered):
                item_id = str(record["id"]) if len(answered) == 1 else f"{record['id']}#{number}"
                items.append(eval_item(item_id, record, sample["task"], turns[:index],
                                       {"answers": [turns[index][1]], **self.extra_reference(record)}))
        return items

    def extra_reference(self, record: dict) -> dict:
        """Reference fields a record carries beyond its answer (for example a target box)."""
        return {}


def eval_item(item_id: str, record: dict, task: str | None, turns: list, reference: dict) -> dict:
    """An evaluation question; a record's "choices" make it multiple choice (answered by choosing)."""
    choices = {"choices": record["choices"]} if "choices" in record else {}
    return {"id": item_id, "image": record.get("image"), "task": task, "turns": list(turns), "reference": reference,
            **choices}


def fixed_question(instruction: str | None, default: str, value: str) -> str:
    """An evaluation question: the config's `instruction` ("{}" marks the value) or the builder's default."""
    return (instruction or default).format(value)
