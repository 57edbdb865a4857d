"""Image-caption pairs streamed from webdataset tar shards (LAION, CC/SBU as img2dataset writes them).

Each sample in a shard has an image (`jpg`, `png` or `webp`) and a `json` with a "caption" (or a
`txt`). Shards are shuffled per pass from the seed, split by rank and then by DataLoader worker, so no
sample is seen twice in a pass; a shuffle buffer mixes samples across shards.

`resampled=True` is for iteration-based runs over huge shard sets: each rank and worker draws shards
with replacement, endlessly, from its own seeded generator (a pass never ends, so no rank waits for a
slower one at a pass boundary; a sample may then repeat before all have been seen).
"""
from __future__ import annotations

import io
import json
import random

import webdataset as wds
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from minigpt.common.errors import InputError
from minigpt.common.paths import resolve_path, shard_paths
from minigpt.conversation.template import ASSISTANT
from minigpt.processors.image import to_rgb

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")


class CaptionShardDataset(IterableDataset):
    def __init__(self, name: str, pattern: str, vis_processor, text_processor, shuffle_buffer: int = 1000,
                 strict: bool = False, resampled: bool = False):
        self.name = name
        self.resampled = resampled
        self.shards = [str(resolve_path(p)) for p in shard_paths(pattern)]
        self.vis_processor = vis_processor
        self.text_processor = text_processor
        self.shuffle_buffer = shuffle_buffer
        self.strict = strict
        self.seed, self.pass_index, self.rank, self.world_size = 0, 0, 0, 1

    def set_pass(self, seed: int, pass_index: int, rank: int, world_size: int) -> None:
        """Called before each pass: the shard order and sample shuffle depend only on these."""
        self.seed, self.pass_index, self.rank, self.world_size = seed, pass_index, rank, world_size

    def _my_shards(self, worker_id: int, num_workers: int) -> list[str]:
        shards = list(self.shards)
        random.Random(f"{self.seed}-{self.pass_index}").shuffle(shards)
        shards = shards[self.rank :: self.world_size][worker_id::num_workers]
        if not shards:
            raise InputError(f"{self.name}: {len(self.shards)} shards cannot feed {self.world_size} ranks x "
                             f"{num_workers} workers; use at least as many shards as ranks x workers")
        return shards

    def __iter__(self):
        worker = get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        rng = random.Random(f"{self.seed}-{self.pass_index}-{self.rank}-{worker_id}")
        if self.resampled:
            shard_rng = random.Random(f"{self.seed}-{self.pass_index}-{self.rank}-{worker_id}-shards")
            urls = ({"url": shard_rng.choice(self.shards)} for _ in iter(int, 1))  # endless
        else:
            urls = ({"url": url} for url in self._my_shards(worker_id, num_workers))
        raw = wds.tarfile_to_samples(handler=self._on_error)(urls)
        buffer: list[dict] = []
        for record in raw:
            buffer.append(record)
            if len(buffer) >= self.shuffle_buffer:
                yield self._decode(buffer.pop(rng.randrange(len(buffer))))
        rng.shuffle(buffer)
        for record in buffer:
            yield self._decode(record)

    def _on_error(self, error: Exception) -> bool:
        """A shard that cannot be read at all (a broken tar) is reported; its readable part is kept."""
        if self.strict:
            raise error
        print(f"[{self.name}] skipped part of a broken shard: {error}")
        return True

    def _decode(self, record: dict) -> dict:
        key = f"{record.get('__url__', '?')}:{record.get('__key__', '?')}"
        image_key = next((k for k in IMAGE_KEYS if k in record), None)
        try:
            if image_key is None:
                raise KeyError(f"no image field (one of {', '.join(IMAGE_KEYS)})")
            if "json" in record:
                caption = json.loads(record["json"])["caption"]
            else:
                caption = record["txt"].decode("utf-8")
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError(f"caption is {caption!r}, not a non-empty string")
            if self.text_processor is not None:
                caption = self.text_processor(caption)
            image = to_rgb(Image.open(io.BytesIO(record[image_key])))
        except Exception as error:  # a corrupt image or record is skipped and reported, never fatal
            if self.strict:
                raise InputError(f"{self.name}: bad sample {key}: {error}") from error
            return {"id": key, "dataset": self.name, "skip": ("broken record", f"{type(error).__name__}: {error}")}
        return {"id": record["__key__"], "dataset": self.name, "image": self.vis_processor(image),
                "turns": [(ASSISTANT, caption)], "choice_seed": f"{self.seed}-{self.pass_index}"}
