"""Metric loggers: a local JSONL file always; wandb (WANDB_MODE=offline works) and TensorBoard when the config asks."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Protocol


class MetricLogger(Protocol):
    def log(self, metrics: dict, step: int) -> None: ...

    def close(self) -> None: ...


class JsonlLogger:
    """One JSON object per line in <output_dir>/log.jsonl; appends, so a resumed run continues the file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = self.path.open("a")

    def log(self, metrics: dict, step: int) -> None:
        self.file.write(json.dumps({"step": step, "time": round(time.time(), 3), **metrics}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class WandbLogger:
    def __init__(self, project: str, name: str | None, config: dict, output_dir: str | Path):
        import wandb

        self.run = wandb.init(project=project, name=name, config=config, dir=str(output_dir))

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class TensorBoardLogger:
    """TensorBoard events under <output_dir>/tensorboard: every number logged (nested dicts as a/b tags)."""

    def __init__(self, log_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, metrics: dict, step: int) -> None:
        for tag, value in _numbers(metrics):
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _numbers(metrics: dict, prefix: str = "") -> list[tuple[str, float]]:
    """(tag, value) for every number in `metrics`, nested dicts flattened to a/b."""
    found = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            found += _numbers(value, f"{prefix}{key}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found.append((f"{prefix}{key}", float(value)))
    return found


class MultiLogger:
    def __init__(self, loggers: list[MetricLogger]):
        self.loggers = loggers

    def log(self, metrics: dict, step: int) -> None:
        for logger in self.loggers:
            logger.log(metrics, step)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()
