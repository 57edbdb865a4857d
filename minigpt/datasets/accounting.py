"""Where every sample went: used, truncated, or skipped and why, per data set and per epoch.

Skipping a bad sample must never be silent: each one is written with its data set, id, reason and path
to `<output_dir>/skipped-rank<r>.jsonl`, the first few are printed, and at each epoch end the counts of
all ranks are summed and logged.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

SKIP_REASONS = ("missing image", "unreadable image", "broken record", "invalid conversation", "no answer token fits")
COLUMNS = ("used", "truncated", *SKIP_REASONS)


class SampleAccounting:
    def __init__(self, dataset_names: list[str], skipped_path: Path | None = None, print_first: int = 5,
                 printer=print, device: torch.device | str = "cpu"):
        self.names = list(dataset_names)
        self.skipped_path = skipped_path
        self.print_first = print_first
        self.printer = printer
        self.printed = 0
        self.device = device  # where the all-reduce happens (nccl reduces GPU tensors only)
        self.counts = torch.zeros(len(self.names), len(COLUMNS), dtype=torch.long)

    def add(self, batch: dict) -> None:
        for name, truncated in zip(batch["datasets"], batch["truncated"]):
            row = self.names.index(name)
            self.counts[row, 0] += 1
            self.counts[row, 1] += int(truncated)
        for skip in batch["skipped"]:
            reason = skip["reason"] if skip["reason"] in SKIP_REASONS else "invalid conversation"
            self.counts[self.names.index(skip["dataset"]), COLUMNS.index(reason)] += 1
            if self.printed < self.print_first:
                self.printer(f"skipped {skip['dataset']} sample {skip['id']}: {reason}: {skip['detail']}")
                self.printed += 1
            if self.skipped_path is not None:
                with self.skipped_path.open("a") as file:
                    file.write(json.dumps(skip) + "\n")

    def end_epoch(self) -> dict[str, dict[str, int]]:
        """Counts of this epoch summed over ranks, as {data set: {column: count}}; then starts over."""
        totals = self.counts.to(self.device, copy=True)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
        totals = totals.cpu()
        self.counts.zero_()
        return {name: {column: int(totals[row, col]) for col, column in enumerate(COLUMNS)}
                for row, name in enumerate(self.names)}

    @staticmethod
    def describe(summary: dict[str, dict[str, int]]) -> str:
        """e.g. "cc_sbu_align: 480 used (3 truncated), 2 skipped (missing image: 2)"."""
        lines = []
        for name, counts in summary.items():
            reasons = {r: counts[r] for r in SKIP_REASONS if counts[r]}
            skipped = sum(reasons.values())
            detail = f" ({', '.join(f'{r}: {n}' for r, n in reasons.items())})" if reasons else ""
            lines.append(f"{name}: {counts['used']} used ({counts['truncated']} truncated), {skipped} skipped{detail}")
        return "; ".join(lines)
