"""Dataset builders: one small class per data set, named in the registry, configured by one YAML.

A builder turns its `datasets.<name>` config section into a torch Dataset of template-free samples.
To add a data set: subclass AnnotationBuilder (or DatasetBuilder), implement `parse` (and, if needed,
`make_sample`), register it, and write minigpt/configs/datasets/<name>/default.yaml. dataset/README.md
walks through an example.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Optional

from omegaconf import DictConfig
from torch.utils.data import Dataset

from minigpt.common import registry
from minigpt.common.schema import DatasetConfig
from minigpt.conversation.template import ASSISTANT
from minigpt.datasets.annotations import subsample
from minigpt.datasets.image_records import ImageRecordDataset


def build_processor(section: DictConfig, split: str) -> Callable | None:
    """`vis_processor: {train: {name: blip2_image_train, image_size: 224}}` -> a processor instance."""
    options = section.get(split) or section.get("train")
    if options is None:
        return None
    options = dict(options)
    return registry.get("processor", options.pop("name"))(**options)


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

    def build_dataset(self, strict: bool) -> ImageRecordDataset:
        records = self.parse(self.ann_path())
        records = subsample(records, self.cfg.subsample_count, self.cfg.subsample_ids, self.cfg.subsample_seed)
        return ImageRecordDataset(self.name, records, self.image_path(), self.vis_processor, self.cleaned_sample,
                                  strict, source=self.ann_path(), arrange=self.arrange)

    def cleaned_sample(self, record: dict, rng: random.Random) -> dict:
        """make_sample, with `text_processor` (when the config sets one) applied to every answer."""
        sample = self.make_sample(record, rng)
        if self.text_processor is not None:
            sample["turns"] = [(role, self.text_processor(text) if role == ASSISTANT else text)
                               for role, text in sample["turns"]]
        return sample
