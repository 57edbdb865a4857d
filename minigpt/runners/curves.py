"""A run's training curves as one PNG: loss, learning rate and gradient norm against the step, read from
the run's log.jsonl. Written at the end of every run (<output_dir>/curves.png), and on demand by
`minigpt plot RUN_DIR`.

A resumed run appends to the same log, so a step that appears twice keeps its later value (the run that
went on from there). Lines that are not JSON (a run killed mid-write) are skipped and counted.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from minigpt.common.drawing import draw_text
from minigpt.common.errors import InputError

PANELS = (("loss", "loss"), ("lr", "learning rate"), ("grad_norm", "gradient norm"))
WIDTH, PANEL_HEIGHT, MARGIN = 900, 220, 60
LINE = (31, 119, 180)


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
        for key in curves.series:
            value = row.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value) and "step" in row:
                curves.series[key][int(row["step"])] = float(value)
    if not curves.series["loss"]:
        raise InputError(f"{path}: no loss logged yet (one line every run.log_freq steps)")
    return curves


def _draw_panel(pen: ImageDraw.ImageDraw, top: int, title: str, points: dict[int, float], steps: tuple[int, int]):
    """One panel: a frame, the title, the value range on the left, the curve."""
    left, right, bottom = MARGIN + 20, WIDTH - 20, top + PANEL_HEIGHT - 30
    pen.rectangle([left, top + 20, right, bottom], outline=(120, 120, 120))
    draw_text(pen, (left, top + 4), title)
    if not points:
        draw_text(pen, (left + 10, top + 30), "not logged", fill=(120, 120, 120))
        return
    low, high = min(points.values()), max(points.values())
    span, step_span = (high - low) or 1.0, (steps[1] - steps[0]) or 1
    draw_text(pen, (4, top + 20), f"{high:.3g}")
    draw_text(pen, (4, bottom - 14), f"{low:.3g}")
    xy = [(left + (step - steps[0]) / step_span * (right - left), bottom - (value - low) / span * (bottom - top - 20))
          for step, value in sorted(points.items())]
    if len(xy) == 1:
        pen.ellipse([xy[0][0] - 2, xy[0][1] - 2, xy[0][0] + 2, xy[0][1] + 2], fill=LINE)
    else:
        pen.line(xy, fill=LINE, width=2)


def plot_curves(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the curves of the run in `run_dir` to `out` (default <run_dir>/curves.png); -> the PNG."""
    run_dir = Path(run_dir)
    curves = read_curves(run_dir / "log.jsonl")
    all_steps = [step for points in curves.series.values() for step in points]
    steps = (min(all_steps), max(all_steps))
    image = Image.new("RGB", (WIDTH, 30 + PANEL_HEIGHT * len(PANELS) + 20), (255, 255, 255))
    pen = ImageDraw.Draw(image)
    skipped = f", {curves.skipped_lines} unreadable log lines skipped" if curves.skipped_lines else ""
    draw_text(pen, (MARGIN + 20, 8), f"{run_dir.name}: steps {steps[0]}-{steps[1]}{skipped}")
    for index, (key, title) in enumerate(PANELS):
        _draw_panel(pen, 30 + index * PANEL_HEIGHT, title, curves.series[key], steps)
    draw_text(pen, (WIDTH // 2 - 10, image.height - 18), "step")
    out = Path(out) if out else run_dir / "curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.tmp.png")
    image.save(temporary)
    temporary.replace(out)
    return out
