"""Training curves as a PNG (`minigpt plot`), and checkpoint retention (run.keep_last)."""
import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from minigpt.cli.main import main
from minigpt.common.checkpoint import prune_checkpoints
from minigpt.common.errors import InputError, MissingExtraError
from minigpt.runners.curves import plot_curves, read_curves, smoothed


def write_log(folder, rows, broken: int = 0):
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row) for row in rows] + ['{"step": 9, "loss": 0.'] * broken  # a run killed mid-write
    (folder / "log.jsonl").write_text("\n".join(lines) + "\n")


C0, C1 = (31, 119, 180), (255, 127, 14)  # matplotlib's first two colours: the first run's, the second's


def panels_with(picture, colour) -> list[bool]:
    """For each panel of the PNG, top to bottom (found by its axes' black top and bottom spines), whether
    pixels of `colour` are drawn inside it."""
    with Image.open(picture) as image:
        rgb = np.asarray(image.convert("RGB")).astype(int)
    spine_rows = np.flatnonzero((rgb.sum(axis=2) < 80).sum(axis=1) > rgb.shape[1] * 0.5)
    edges = [int(row) for index, row in enumerate(spine_rows) if index == 0 or row > spine_rows[index - 1] + 1]
    inked = (np.abs(rgb - np.array(colour)).sum(axis=2) < 30).any(axis=1)
    return [bool(inked[top + 2:bottom - 1].any()) for top, bottom in zip(edges[::2], edges[1::2])]


def test_a_resumed_runs_later_values_win_and_broken_lines_are_counted(tmp_path):
    rows = [{"step": step, "loss": 4.0 / step, "lr": 1e-3, "grad_norm": 2.0} for step in (1, 2, 3, 4)]
    rows += [{"epoch": 0, "epoch_samples": {}}, {"step": 3, "loss": 9.0, "lr": 1e-3, "grad_norm": 1.0}]  # resumed at 2
    write_log(tmp_path, rows, broken=1)
    curves = read_curves(tmp_path / "log.jsonl")
    assert curves.series["loss"] == {1: 4.0, 2: 2.0, 3: 9.0, 4: 1.0} and curves.skipped_lines == 1
    picture = plot_curves(tmp_path)
    assert picture == tmp_path / "curves.png"
    assert panels_with(picture, C0) == [True] * 3  # loss, learning rate and gradient norm: the panels logged


def test_throughput_and_evaluation_scores_get_panels_and_runs_compare_on_shared_axes(tmp_path):
    rows = [{"step": step, "loss": 1.0 / step, "lr": 1e-3, "grad_norm": 1.0, "samples_per_s": 50.0 + step,
             "tokens_per_s": 900.0} for step in range(1, 6)]
    write_log(tmp_path / "a", rows + [{"step": 5, "shapes_test/exact_match": 0.8}])
    write_log(tmp_path / "b", [{"step": step, "loss": 2.0 / step} for step in range(1, 6)])
    alone = plot_curves(tmp_path / "a")
    assert panels_with(alone, C0) == [True] * 6  # loss, lr, gradient norm, samples/s, tokens/s, the eval score
    both = plot_curves([tmp_path / "a", tmp_path / "b"], tmp_path / "ab.png")
    assert panels_with(both, C0) == [True] * 6 and panels_with(both, C1) == [True] + [False] * 5  # b: its loss


def test_the_loss_is_smoothed_without_a_pull_towards_zero():
    assert smoothed([3.0] * 5) == pytest.approx([3.0] * 5)  # bias-corrected: a constant stays itself
    steps = smoothed([1.0] * 20 + [0.0] * 20)
    assert steps[19] == pytest.approx(1.0) and 0.0 < steps[25] < 1.0 and steps[-1] < 0.2


def test_minigpt_plot_writes_where_asked_and_names_what_is_missing(tmp_path, capsys, monkeypatch):
    write_log(tmp_path / "run", [{"step": 1, "loss": 3.0, "lr": 0.1}, {"step": 2, "loss": 1.5, "lr": 0.1}])
    write_log(tmp_path / "other", [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}])
    assert main(["plot", str(tmp_path / "run"), "--out", str(tmp_path / "plots" / "loss.png")]) == 0
    assert "loss 3.0000 at step 1 -> 1.5000 at step 2" in capsys.readouterr().out
    assert (tmp_path / "plots" / "loss.png").exists()
    assert main(["plot", str(tmp_path / "run"), str(tmp_path / "other"), "--compare",
                 "--out", str(tmp_path / "both.png")]) == 0 and panels_with(tmp_path / "both.png", C1) == [True, False]
    assert main(["plot", str(tmp_path / "run"), str(tmp_path / "other"), "--out", str(tmp_path / "x.png")]) == 2
    assert "needs --compare" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "nowhere")]) == 2
    assert "no training log here" in capsys.readouterr().err
    write_log(tmp_path / "early", [{"epoch": 0}])
    with pytest.raises(InputError, match="no loss logged yet"):
        plot_curves(tmp_path / "early")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a))
    with pytest.raises(MissingExtraError, match=r"pip install 'minigpt-lab\[plot\]'"):
        plot_curves(tmp_path / "run")


def test_keep_last_removes_older_checkpoints_and_never_the_newest(tmp_path):
    for step in (5, 10, 15, 20):
        (tmp_path / f"checkpoint_{step:07d}").mkdir()
    (tmp_path / ".checkpoint_0000025.tmp").mkdir()  # a checkpoint being written is not whole, and not touched
    removed = prune_checkpoints(tmp_path, keep_last=2)
    assert [path.name for path in removed] == ["checkpoint_0000005", "checkpoint_0000010"]
    assert sorted(path.name for path in tmp_path.iterdir()) == [".checkpoint_0000025.tmp", "checkpoint_0000015",
                                                                "checkpoint_0000020"]
    prune_checkpoints(tmp_path, keep_last=0)
    assert sorted(path.name for path in tmp_path.glob("checkpoint_*")) == ["checkpoint_0000020"]
