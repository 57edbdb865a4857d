"""Annotation JSON + image folder datasets: ShareGPT4V-style conversations and caption lists.

ShareGPT4V records: {"id", "image": path under image_path, "conversations": [{"from": "human"|"gpt",
"value": "<image>\\n..."}]}. The `<image>` marker is dropped here: the collator places the image.
"""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from minigpt.common.config import resolve_path
from minigpt.conversation.template import ASSISTANT, USER

ROLES = {"human": USER, "user": USER, "gpt": ASSISTANT, "assistant": ASSISTANT}


def load_json_records(path: str | Path, key: str | None = None) -> list[dict]:
    path = resolve_path(str(path))
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: malformed JSON at line {error.lineno}, column {error.colno}: {error.msg}") from None
    if key is not None:
        data = data[key]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of records{f' under {key!r}' if key else ''}")
    return data


def field(record: dict, name: str, path, index: int):
    if name not in record:
        raise ValueError(f"{path}: record {index} (id {record.get('id', '?')!r}): missing field '{name}'")
    return record[name]


class ImageRecordDataset(Dataset):
    """Map-style: each item loads one image and turns its record into a template-free sample."""

    def __init__(self, name: str, records: list[dict], image_root: str, vis_processor, strict: bool = False):
        self.name = name
        self.records = records
        self.image_root = resolve_path(image_root)
        self.vis_processor = vis_processor
        self.strict = strict

    def __len__(self) -> int:
        return len(self.records)

    def load_image(self, relative_path: str):
        return self.vis_processor(Image.open(self.image_root / relative_path).convert("RGB"))

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        try:
            image = self.load_image(record["image"])
        except Exception as error:  # unreadable or missing image: skipped and counted, or fatal if strict
            path = self.image_root / record["image"]
            if self.strict:
                raise ValueError(f"{self.name}: record {index} (id {record['id']!r}): cannot read image {path}: {error}") from error
            return {"id": record["id"], "dataset": self.name, "error": f"unreadable image {path}: {type(error).__name__}"}
        return {"id": record["id"], "dataset": self.name, "image": image, "turns": record["turns"]}


def parse_sharegpt4v(path: str | Path) -> list[dict]:
    """-> records {"id", "image", "turns": [(role, text)]}, validated with file and record named."""
    records = []
    for index, record in enumerate(load_json_records(path)):
        turns = []
        for turn_index, turn in enumerate(field(record, "conversations", path, index)):
            role = ROLES.get(field(turn, "from", path, index))
            if role is None:
                raise ValueError(f"{path}: record {index} (id {record.get('id')!r}): conversations[{turn_index}].from "
                                 f"is {turn['from']!r}, expected human or gpt")
            text = field(turn, "value", path, index).replace("<image>\n", "").replace("\n<image>", "").replace("<image>", "")
            turns.append((role, text.strip()))
        records.append({"id": str(field(record, "id", path, index)), "image": field(record, "image", path, index),
                        "turns": turns})
    return records


def parse_caption_list(path: str | Path) -> list[dict]:
    """MiniGPT-4's stage-2 `filter_cap.json`: {"annotations": [{"image_id", "caption"}]}, images <id>.jpg."""
    records = []
    for index, record in enumerate(load_json_records(path, key="annotations")):
        image_id = str(field(record, "image_id", path, index))
        records.append({"id": image_id, "image": f"{image_id}.jpg",
                        "turns": [(ASSISTANT, field(record, "caption", path, index))]})
    return records
