"""Image-caption data: LAION / CC-SBU shards (stage 1), MiniGPT-4's alignment set (stage 2), COCO
captions and TextCaps (stage 3)."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from minigpt.common.registry import register_builder
from minigpt.common.schema import DatasetConfig
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.datasets.annotations import load_records, require, require_text, text_value
from minigpt.datasets.builders.base import (AnnotationBuilder, AnnotationConfig, DatasetBuilder, eval_item,
                                            fixed_question)
from minigpt.datasets.caption_shards import CaptionShardDataset
from minigpt.datasets.instructions import SHORT_CAPTION, phrase


@dataclass
class ShardConfig(DatasetConfig):
    shuffle_buffer: int = 1000  # samples held in memory to shuffle across shards
    resampled: bool = False  # draw shards with replacement, endlessly (iteration-based runs)


@register_builder("laion", "cc_sbu")
class CaptionShardBuilder(DatasetBuilder):
    """Stage-1 image-caption pairs in webdataset shards (`build_info.storage`: a brace pattern)."""

    config_class = ShardConfig

    def build_dataset(self, strict):
        return CaptionShardDataset(self.name, self.cfg.build_info.storage, self.vis_processor, self.text_processor,
                                   self.cfg.shuffle_buffer, strict, self.cfg.resampled)


@register_builder("cc_sbu_align")
class CCSBUAlignBuilder(AnnotationBuilder):
    """MiniGPT-4's stage-2 set: `<storage>/filter_cap.json` {"annotations": [{"image_id", "caption"}]} and
    `<storage>/image/<image_id>.jpg`. The instruction comes from the model's `prompt_path` list."""

    def ann_path(self):
        return self.cfg.build_info.ann_path or str(Path(self.cfg.build_info.storage) / "filter_cap.json")

    def image_path(self):
        return self.cfg.build_info.image_path or str(Path(self.cfg.build_info.storage) / "image")

    def parse(self, ann_path):
        records = []
        for index, record in enumerate(load_records(ann_path, key="annotations")):
            image_id = str(require(record, "image_id", ann_path, index))
            caption = require_text(record, "caption", ann_path, index)
            records.append({"id": image_id, "image": f"{image_id}.jpg", "turns": [(ASSISTANT, caption)]})
        return records


@dataclass
class COCOCaptionConfig(AnnotationConfig):
    # Karpathy's train file also holds 30k val2014 images ("restval"); MiniGPT-v2 keeps train2014 only.
    image_path_contains: Optional[str] = "train"  # keep entries whose image path contains this (null: all)


@register_builder("coco_caption")
class COCOCaptionBuilder(AnnotationBuilder):
    """Karpathy-split COCO captions: a list of {"image": "train2014/...jpg", "caption", "image_id"}, one
    entry per caption (the val / test files give each image once, with a list of captions). Each sample
    asks for a short caption in one of several phrasings; eval.py asks once per image and scores BLEU-4
    and CIDEr against all of the image's captions."""

    config_class = COCOCaptionConfig

    def parse(self, ann_path):
        records = []
        keep = self.cfg.image_path_contains
        for index, record in enumerate(load_records(ann_path)):
            image = require_text(record, "image", ann_path, index)
            if keep and keep not in image:
                continue
            captions = require(record, "caption", ann_path, index)
            image_id = str(record.get("image_id", Path(image).stem))
            if isinstance(captions, str):
                records.append({"id": f"{image_id}-{index}", "image_id": image_id, "image": image, "caption": captions})
                continue
            for number, caption in enumerate(captions):
                records.append({"id": f"{image_id}-{index}-{number}", "image_id": image_id, "image": image,
                                "caption": text_value(caption, f"caption[{number}]", ann_path, index, image_id)})
        return records

    def make_sample(self, record: dict, rng: random.Random) -> dict:
        return {"turns": [(USER, phrase(SHORT_CAPTION, rng)), (ASSISTANT, record["caption"])], "task": "caption"}

    def eval_metric(self):
        return "caption"

    def eval_items(self, records, instruction=None):
        by_image: dict[str, list[dict]] = {}
        for record in records:
            by_image.setdefault(record["image_id"], []).append(record)
        question = fixed_question(instruction, SHORT_CAPTION[0], "")
        return [eval_item(image_id, group[0], "caption", [(USER, question)], {"captions": [r["caption"] for r in group]})
                for image_id, group in by_image.items()]


@register_builder("textcaps", "textcaps_caption")
class TextCapsBuilder(COCOCaptionBuilder):
    """TextCaps: {"data": [{"image_id", "caption_str", "caption_id"?}]}, images `<image_id>.jpg`."""

    config_class = AnnotationConfig

    def parse(self, ann_path):
        records = []
        for index, record in enumerate(load_records(ann_path, key="data")):
            image_id = require(record, "image_id", ann_path, index)
            caption = require_text(record, "caption_str", ann_path, index)
            records.append({"id": str(record.get("caption_id", f"{image_id}-{index}")), "image_id": str(image_id),
                            "image": f"{image_id}.jpg", "caption": caption})
        return records
