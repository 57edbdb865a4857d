"""Dataset builders: one small class per data set, named in the registry, configured by one YAML.

A builder turns its `datasets.<name>` config section into a torch Dataset of template-free samples.
To add a data set: subclass DatasetBuilder, implement `build_dataset`, register it, and write
minigpt/configs/datasets/<name>/default.yaml.
"""
from __future__ import annotations

from typing import Callable

from omegaconf import DictConfig
from torch.utils.data import Dataset

from minigpt.common import registry
from minigpt.common.schema import DatasetConfig


def build_processor(section: DictConfig, split: str) -> Callable | None:
    """`vis_processor: {train: {name: blip2_image_train, image_size: 224}}` -> a processor instance."""
    options = section.get(split) or section.get("train")
    if options is None:
        return None
    options = dict(options)
    return registry.get("processor", options.pop("name"))(**options)


class DatasetBuilder:
    config_class = DatasetConfig

    def __init__(self, name: str, cfg: DictConfig):
        self.name = name
        self.cfg = cfg

    def build(self, split: str = "train", strict: bool = False) -> Dataset:
        vis_processor = build_processor(self.cfg.vis_processor, split)
        text_processor = build_processor(self.cfg.text_processor, split)
        return self.build_dataset(vis_processor, text_processor, strict)

    def build_dataset(self, vis_processor, text_processor, strict: bool) -> Dataset:
        raise NotImplementedError
