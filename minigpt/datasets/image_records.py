"""A map-style data set of annotation records, each with an optional image file.

Builders parse their annotation format into records {"id", "image": path under image_root or None,
...}; `make_sample(record, rng)` turns one record into template-free turns, drawing any random choice
(an instruction phrasing, one of several answers) from `rng`, which is seeded from (seed, pass, id) so
a resumed run draws the same. A missing or unreadable image never stops training: the sample comes back
as {"id", "dataset", "skip": (reason, path)}, which the collator counts, unless `strict` is set.
"""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Callable

from PIL import Image
from torch.utils.data import Dataset

from minigpt.common.errors import InputError
from minigpt.common.paths import resolve_path
from minigpt.processors.image import to_rgb


def read_image(path: Path | io.BytesIO) -> Image.Image:
    """Opens and fully decodes, so a truncated file fails here and not inside a worker's transform."""
    with Image.open(path) as image:
        image.load()
        return to_rgb(image)


MakeSample = Callable[[dict, random.Random], dict]  # record, rng -> {"turns": [...], "task": ...}
Arrange = Callable[[list, random.Random], list]  # all records, rng -> this pass's records (same length every pass)


class ImageRecordDataset(Dataset):
    def __init__(self, name: str, records: list[dict], image_root: str | None, vis_processor,
                 make_sample: MakeSample, strict: bool = False, source: str = "", arrange: Arrange | None = None,
                 image_check: Callable[[Image.Image], str | None] | None = None):
        self.name = name
        self.all_records = records
        self.arrange = arrange  # e.g. weighted sections: which records repeat changes from pass to pass
        self.image_root = resolve_path(image_root) if image_root else None
        self.vis_processor = vis_processor
        self.make_sample = make_sample
        self.strict = strict
        self.source = source  # the annotation file, for messages
        self.image_check = image_check  # image -> a reason to skip the sample, or None (e.g. "no face found")
        self.set_pass(0, 0)

    def set_pass(self, seed: int, pass_index: int, rank: int = 0, world_size: int = 1) -> None:
        self.seed, self.pass_index = seed, pass_index
        if self.arrange is None:
            self.records = self.all_records
        else:
            self.records = self.arrange(self.all_records, random.Random(f"{seed}-{pass_index}-arrange"))

    def __len__(self) -> int:
        return len(self.records)

    def image_file(self, record: dict) -> Path | None:
        if record.get("image") is None:
            return None
        path = Path(record["image"])
        return path if path.is_absolute() or self.image_root is None else self.image_root / path

    def sample_content(self, index: int) -> dict:
        record = self.records[index]
        rng = random.Random(f"{self.seed}-{self.pass_index}-{record['id']}")
        return {"id": str(record["id"]), "dataset": self.name, "choice_seed": f"{self.seed}-{self.pass_index}",
                **self.make_sample(record, rng)}

    def text_length(self, index: int) -> int:
        """Characters of the sample's turns: a cheap stand-in for its token count (run.group_by_length)."""
        return sum(len(text) for _, text in self.sample_content(index)["turns"])

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        sample = self.sample_content(index)
        path = self.image_file(record)
        if path is None and not record.get("image_bytes"):  # a text-only record
            return {**sample, "image": None}
        try:  # an image embedded in the data file (a Hugging Face Image value) is read from its bytes
            image = read_image(io.BytesIO(record["image_bytes"]) if record.get("image_bytes") else path)
        except Exception as error:  # missing or unreadable: skipped and counted, or fatal if strict
            reason = "missing image" if isinstance(error, FileNotFoundError) else "unreadable image"
            return self._skip(record, reason, f"{reason} {path}: {error}", path, error)
        reason = self.image_check(image) if self.image_check else None
        if reason is not None:
            return self._skip(record, reason, f"{reason} in {path}", path)
        return {**sample, "image": self.vis_processor(image)}

    def _skip(self, record: dict, reason: str, detail: str, path, error: Exception | None = None) -> dict:
        """A sample left out and counted by the collator, or under `strict` an error naming the record."""
        if self.strict:
            raise InputError(f"{self.name}: {self.source}: id {record['id']!r}: {detail}") from error
        return {"id": str(record["id"]), "dataset": self.name, "skip": (reason, str(path))}
