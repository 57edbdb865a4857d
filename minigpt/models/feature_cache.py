"""Frozen image features, cached by image content, for stages that show each image many times.

A frozen vision encoder (and a frozen Q-Former after it) gives the same features for the same pixels
every epoch, so a multi-epoch stage need not run it again. Entries are keyed by a hash of the processed
image tensor itself, so a random augmentation simply misses, and by a fingerprint of the frozen
weights, so features computed from other weights are never served. The cache lives in memory (on the
CPU), least recently used entries leave first once it holds `max_bytes`.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Callable

import torch
from torch import nn


def weights_fingerprint(modules: list[nn.Module | nn.Parameter]) -> str:
    """A digest of every tensor of the frozen parts (names, shapes, dtypes and values)."""
    digest = hashlib.blake2b(digest_size=16)
    for index, item in enumerate(modules):
        tensors = [("", item)] if isinstance(item, nn.Parameter) else item.state_dict().items()
        for name, tensor in tensors:
            digest.update(f"{index}.{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: OrderedDict[str, torch.Tensor] = OrderedDict()  # key -> features of one image, on the CPU
        self.bytes = 0
        self.hits = self.misses = 0
        self.fingerprint: str | None = None  # of the frozen weights; set on first use, after checkpoints load

    def key(self, image: torch.Tensor) -> str:
        digest = hashlib.blake2b(self.fingerprint.encode(), digest_size=20)
        digest.update(f"{tuple(image.shape)}:{image.dtype}".encode())
        digest.update(image.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def __call__(self, images: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor],
                 frozen: list[nn.Module | nn.Parameter]) -> torch.Tensor:
        """compute(images) for the images not cached yet; cached rows come back as they were stored."""
        if self.fingerprint is None:
            self.fingerprint = weights_fingerprint(frozen)
        keys = [self.key(image) for image in images]
        missing = [index for index, key in enumerate(keys) if key not in self.entries]
        computed = compute(images[missing]) if missing else None  # [len(missing), ...]
        position = {index: row for row, index in enumerate(missing)}
        rows = []
        for index, key in enumerate(keys):
            if index in position:
                row = computed[position[index]]
                self._store(key, row)
                self.misses += 1
            else:
                self.entries.move_to_end(key)
                row = self.entries[key].to(images.device, non_blocking=True)
                self.hits += 1
            rows.append(row)
        return torch.stack(rows)

    def _store(self, key: str, row: torch.Tensor) -> None:
        size = row.numel() * row.element_size()
        if size > self.max_bytes:
            return
        self.entries[key] = row.detach().to("cpu", copy=True)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, evicted = self.entries.popitem(last=False)
            self.bytes -= evicted.numel() * evicted.element_size()

    def describe(self) -> str:
        total = self.hits + self.misses
        rate = f"{self.hits / total:.0%}" if total else "n/a"
        return (f"feature cache: {len(self.entries)} images, {self.bytes / 2**20:.1f} MiB; "
                f"{self.hits} hits, {self.misses} misses ({rate} hits)")
