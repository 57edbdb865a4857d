"""A gallery of scenes with known objects, for scoring image-to-paragraph (eval.py; docs/paragraph.md).

Schema (a JSON list, or JSON Lines), one scene per record:

    {"id": "gallery_000000",
     "image": "gallery_000000.png",                path under build_info.image_path
     "objects": [{"name": "circle",                the object word a paragraph should use
                  "color": "red", "size": "large", "position": "top left",   optional attributes
                  "box": [3, 0, 29, 26]}]}          optional pixel box

The section's options choose what runs: `variants` (which stages write each compared paragraph),
`writer`, `region_captions`, `plain_check` and `encoder` (a sentence encoder's local folder; TF-IDF
without one).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from minigpt.common.registry import register_builder
from minigpt.common.schema import choice
from minigpt.datasets.annotations import AnnotationError, load_records, require, require_text
from minigpt.datasets.builders.base import AnnotationBuilder, AnnotationConfig

OBJECT_FIELDS = ("name", "color", "size", "position")
DEFAULT_VARIANTS = {"caption_only": ["caption"], "regions_only": ["regions"], "segments_only": ["segments"],
                    "all": ["caption", "regions", "segments"]}


@dataclass
class ParagraphGalleryConfig(AnnotationConfig):
    variants: Dict[str, List[str]] = field(default_factory=lambda: dict(DEFAULT_VARIANTS))
    writer: str = choice("template", "model")
    region_captions: bool = True
    plain_check: bool = True
    encoder: Optional[str] = None  # a sentence-transformers folder; None: TF-IDF


@register_builder("paragraph_gallery")
class ParagraphGalleryBuilder(AnnotationBuilder):
    config_class = ParagraphGalleryConfig

    def parse(self, ann_path):
        records = []
        for index, record in enumerate(load_records(ann_path)):
            record_id = str(require(record, "id", ann_path, index))
            image = require_text(record, "image", ann_path, index)
            objects = require(record, "objects", ann_path, index)
            if not isinstance(objects, list):
                raise AnnotationError(ann_path, index, "field 'objects' must be a list", record_id)
            for number, obj in enumerate(objects):
                if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
                    raise AnnotationError(ann_path, index, f"objects[{number}] needs a 'name' (text)", record_id)
                wrong = [key for key in OBJECT_FIELDS if key in obj and not isinstance(obj[key], str)]
                if wrong:
                    raise AnnotationError(ann_path, index, f"objects[{number}].{wrong[0]} must be text", record_id)
            records.append({"id": record_id, "image": image, "objects": objects})
        return records

    def eval_metric(self) -> str:
        return "paragraph"
