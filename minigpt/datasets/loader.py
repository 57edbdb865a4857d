"""Endless, resumable batch streams, and mixing several data sets by sample ratio.

Data order is a pure function of (seed, batch index), so a resumed run sees exactly the batches the
interrupted run would have seen:
- a map-style data set is visited in passes; pass p is a permutation drawn from (seed, p), cut into
  chunks of batch_size; under DDP rank r takes chunks r, r + W, r + 2W, ... Rank r at step k thus holds
  the same samples as micro-batch k*W + r of one process, which makes DDP match gradient accumulation.
- a streamed (webdataset) data set is told (seed, pass, rank, world size) before each pass; resuming
  replays the stream up to the resume point, decoding every sample again (no training): fine for small
  sets, hours for a large stage-1 run. A resampled stream (`resampled: true`, as the stage-1 configs set)
  is instead reseeded from the resume point, so nothing is replayed.
- a data set with `set_pass` is told the pass too, so per-sample random choices (an instruction
  phrasing, one of several answers) change from pass to pass yet repeat exactly on resume.
- the mixer picks the data set of each micro-batch from (seed, micro-batch index) by sample_ratio.
- with `group_by_length`, each window of GROUP_BATCHES batches of the pass's permutation is sorted by
  text length before it is cut into batches, and the batches are then shuffled: batches hold samples of
  similar length, so less of each is padding, and the order is still a function of (seed, pass).
"""
from __future__ import annotations

import random
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from minigpt.common.errors import InputError

GROUP_BATCHES = 50  # batches sorted together by length


class BatchStream:
    """Endless batches of one data set for one rank."""

    def __init__(self, name: str, dataset: Dataset, batch_size: int, collate_fn: Callable, seed: int,
                 rank: int = 0, world_size: int = 1, num_workers: int = 0, group_by_length: bool = False):
        self.name = name
        self.dataset = dataset
        self.batch_size = batch_size
        self.collate_fn = collate_fn
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.streamed = isinstance(dataset, IterableDataset)
        self.group_by_length = group_by_length and hasattr(dataset, "text_length")  # map-style sets only
        if not self.streamed and self.batches_per_pass() == 0:
            raise InputError(f"dataset {name}: {len(dataset)} samples are fewer than one batch of "
                             f"{batch_size} on each of {world_size} ranks")

    def batches_per_pass(self) -> int:
        return len(self.dataset) // (self.batch_size * self.world_size)

    def _loader(self, pass_index: int, **kwargs) -> DataLoader:
        # Its own generator: worker seeds follow (seed, pass), and the global RNG (dropout) is untouched.
        generator = torch.Generator().manual_seed(self.seed * 100_003 + pass_index)
        return DataLoader(self.dataset, collate_fn=self.collate_fn, num_workers=self.num_workers,
                          generator=generator, **kwargs)

    def batches(self, start: int = 0) -> Iterator[dict]:
        """Batches from batch number `start` on (counted on this rank)."""
        if self.streamed:
            yield from self._streamed_batches(start)
            return
        per_pass = self.batches_per_pass()
        pass_index, offset = divmod(start, per_pass)
        while True:
            if hasattr(self.dataset, "set_pass"):
                self.dataset.set_pass(self.seed, pass_index, self.rank, self.world_size)
            generator = torch.Generator().manual_seed(self.seed * 100_003 + pass_index)
            order = torch.randperm(len(self.dataset), generator=generator).tolist()
            order = order[:per_pass * self.world_size * self.batch_size]  # whole batches on every rank
            if self.group_by_length:
                order = self._grouped_by_length(order, generator)
            chunks = [order[i * self.batch_size:(i + 1) * self.batch_size] for i in range(per_pass * self.world_size)]
            mine = chunks[self.rank :: self.world_size][offset:]
            yield from self._loader(pass_index, batch_sampler=mine)
            pass_index, offset = pass_index + 1, 0

    def _grouped_by_length(self, order: list[int], generator: torch.Generator) -> list[int]:
        """`order` with each window of GROUP_BATCHES batches sorted by length, then whole batches shuffled."""
        window = GROUP_BATCHES * self.batch_size
        batches = []
        for start in range(0, len(order), window):
            group = sorted(order[start:start + window], key=self.dataset.text_length, reverse=True)
            batches += [group[i:i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        shuffled = torch.randperm(len(batches), generator=generator).tolist()
        return [index for b in shuffled for index in batches[b]]

    def _streamed_batches(self, start: int) -> Iterator[dict]:
        pass_index, produced = 0, 0
        if getattr(self.dataset, "resampled", False) and start > 0:
            pass_index, produced = start, start  # a fresh endless stream, seeded from the resume point
        while True:
            self.dataset.set_pass(self.seed, pass_index, self.rank, self.world_size)
            got_any = False
            for batch in self._loader(pass_index, batch_size=self.batch_size):
                got_any = True
                if produced >= start:
                    yield batch
                produced += 1
            if not got_any:
                raise InputError(f"dataset {self.name}: a pass over its shards gave no batch on rank {self.rank}")
            pass_index += 1


class MixedBatches:
    """One batch per micro-step from one of several streams, chosen by ratio (MiniGPT-4's MultiIterLoader)."""

    def __init__(self, streams: dict[str, BatchStream], ratios: dict[str, float], seed: int):
        self.streams = streams
        self.names = list(streams)
        self.weights = [ratios[name] for name in self.names]
        self.seed = seed

    def choose(self, micro_step: int) -> str:
        if len(self.names) == 1:
            return self.names[0]
        return random.Random(self.seed * 1_000_003 + micro_step).choices(self.names, self.weights)[0]

    def iterate(self, start_micro_step: int = 0) -> Iterator[tuple[str, dict]]:
        consumed = {name: 0 for name in self.names}
        for micro_step in range(start_micro_step):
            consumed[self.choose(micro_step)] += 1
        iterators = {name: self.streams[name].batches(consumed[name]) for name in self.names}
        micro_step = start_micro_step
        while True:
            name = self.choose(micro_step)
            yield name, next(iterators[name])
            micro_step += 1
