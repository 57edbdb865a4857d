"""Builders for image-caption and conversation data used by MiniGPT-4's stage 1 and stage 2."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from minigpt.common.schema import DatasetConfig
from minigpt.common.registry import register_builder
from minigpt.datasets.builders.base import DatasetBuilder
from minigpt.datasets.caption_shards import CaptionShardDataset
from minigpt.datasets.conversation_json import ImageRecordDataset, parse_caption_list, parse_sharegpt4v


@dataclass
class ShardConfig(DatasetConfig):
    shuffle_buffer: int = 1000


@register_builder("laion", "cc_sbu")
class CaptionShardBuilder(DatasetBuilder):
    """Stage-1 image-caption pairs in webdataset shards (`build_info.storage`: a brace pattern)."""

    config_class = ShardConfig

    def build_dataset(self, vis_processor, text_processor, strict):
        return CaptionShardDataset(self.name, self.cfg.build_info.storage, vis_processor, text_processor,
                                   self.cfg.shuffle_buffer, strict)


@register_builder("cc_sbu_align")
class CCSBUAlignBuilder(DatasetBuilder):
    """MiniGPT-4's stage-2 set: `<storage>/filter_cap.json` and `<storage>/image/<image_id>.jpg`."""

    def build_dataset(self, vis_processor, text_processor, strict):
        info = self.cfg.build_info
        ann_path = info.ann_path or str(Path(info.storage) / "filter_cap.json")
        image_path = info.image_path or str(Path(info.storage) / "image")
        return ImageRecordDataset(self.name, parse_caption_list(ann_path), image_path, vis_processor, strict)


@register_builder("sharegpt4v")
class ShareGPT4VBuilder(DatasetBuilder):
    """Conversations in the ShareGPT4V layout (`build_info.ann_path` JSON, images under `image_path`)."""

    def build_dataset(self, vis_processor, text_processor, strict):
        info = self.cfg.build_info
        return ImageRecordDataset(self.name, parse_sharegpt4v(info.ann_path), info.image_path, vis_processor, strict)
