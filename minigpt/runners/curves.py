"""A run's training curves as one PNG, drawn with matplotlib (the `plot` extra): loss (raw, and smoothed),
learning rate, gradient norm, throughput (samples and tokens per second) and any evaluation scores logged,
against the step, read from the run's log.jsonl. Written at the end of every run (<output_dir>/curves.png),
and on demand by `minigpt plot RUN_DIR...`, which puts several runs on one set of axes per panel.

A resumed run appends to the same log, so a step that appears twice keeps its later value (the run that
went on from there). Lines that are not JSON (a run killed mid-write) are skipped and counted.
"""
from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from minigpt.common.errors import InputError, MissingExtraError

PANELS = (("loss", "loss"), ("lr", "learning rate"), ("grad_norm", "gradient norm"),
          ("samples_per_s", "samples / s"), ("tokens_per_s", "tokens / s"))
EVAL_SEPARATOR = "/"  # evaluation scores are logged as "<section>/<metric>"
SMOOTHING = 0.9  # the loss's exponential moving average, bias-corrected as TensorBoard draws it


@dataclass
class RunCurves:
    """Each metric as {step: value}, and how many log lines were not JSON."""
    series: dict[str, dict[int, float]] = field(default_factory=dict)
    skipped_lines: int = 0


def read_curves(log_path: str | Path) -> RunCurves:
    path = Path(log_path)
    if not path.exists():
        raise InputError(f"{path}: no training log here (a run writes log.jsonl into its output_dir)")
    curves = RunCurves({key: {} for key, _ in PANELS})
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            curves.skipped_lines += 1
            continue
        for key, value in row.items():
            wanted = key in curves.series or EVAL_SEPARATOR in key
            if wanted and isinstance(value, (int, float)) and math.isfinite(value) and "step" in row:
                curves.series.setdefault(key, {})[int(row["step"])] = float(value)
    if not curves.series["loss"]:
        raise InputError(f"{path}: no loss logged yet (one line every run.log_freq steps)")
    return curves


def smoothed(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Exponential moving average with bias correction (the first points are not pulled towards 0)."""
    average, out = 0.0, []
    for index, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight ** index))
    return out


def plot_curves(run_dirs: str | Path | list, out: str | Path | None = None) -> Path:
    """Write the curves of the runs in `run_dirs` (one, or several on shared axes) to `out` (default: the
    one run's <run_dir>/curves.png, or compare.png for several); -> the PNG. Each panel holds the metrics
    some run logged; a run that did not log one is left out of that panel."""
    if importlib.util.find_spec("matplotlib") is None:
        raise MissingExtraError("plotting training curves", "matplotlib", "plot")
    import matplotlib  # (the plot extra: imported only when curves are drawn)
    matplotlib.use("Agg")
    from matplotlib import pyplot

    runs = [Path(run_dir) for run_dir in (run_dirs if isinstance(run_dirs, list) else [run_dirs])]
    curves = {run: read_curves(run / "log.jsonl") for run in runs}
    keys = [key for key, _ in PANELS] + sorted({key for c in curves.values() for key in c.series if EVAL_SEPARATOR in key})
    shown = [key for key in keys if any(c.series.get(key) for c in curves.values())]
    titles = dict(PANELS)
    figure, axes = pyplot.subplots(len(shown), 1, figsize=(9, 2.4 * len(shown)), sharex=True, squeeze=False)
    for axis, key in zip(axes[:, 0], shown):
        for index, (run, run_curves) in enumerate(curves.items()):
            _draw(axis, key, run_curves.series.get(key, {}), run.name, f"C{index}", several=len(runs) > 1)
        axis.set_ylabel(titles.get(key, key))
        axis.grid(alpha=0.3)
        axis.legend(loc="best", fontsize="small")
    axes[-1, 0].set_xlabel("step")
    skipped = sum(c.skipped_lines for c in curves.values())
    figure.suptitle(", ".join(run.name for run in runs) + (f" ({skipped} unreadable log lines skipped)" if skipped else ""))
    figure.tight_layout()
    out = Path(out) if out else (runs[0] / "curves.png" if len(runs) == 1 else Path("compare.png"))
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp.png")
    figure.savefig(temporary, dpi=100)
    pyplot.close(figure)
    temporary.replace(out)
    return out


def _draw(axis, key: str, points: dict[int, float], run_name: str, color: str, several: bool) -> None:
    """One run's curve in a panel: the loss raw (faint) and smoothed; the rest as logged."""
    if not points:
        return
    steps, values = zip(*sorted(points.items()))
    label = run_name if several else key
    if key == "loss":
        axis.plot(steps, values, color=color, alpha=0.3, linewidth=1, label=f"{label} (raw)")
        axis.plot(steps, smoothed(list(values)), color=color, linewidth=2, label=f"{label} (smoothed)")
    else:
        axis.plot(steps, values, color=color, linewidth=1.5, marker="o" if len(steps) == 1 else None, label=label)
