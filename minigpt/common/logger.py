"""Metric loggers: a local JSONL file always, wandb when the config asks (WANDB_MODE=offline works)."""
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


class MultiLogger:
    def __init__(self, loggers: list[MetricLogger]):
        self.loggers = loggers

    def log(self, metrics: dict, step: int) -> None:
        for logger in self.loggers:
            logger.log(metrics, step)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()
