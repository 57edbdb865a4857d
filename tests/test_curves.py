"""Training curves as a PNG (`minigpt plot`), and checkpoint retention (run.keep_last)."""
import json

import pytest
from PIL import Image

from minigpt.cli.main import main
from minigpt.common.checkpoint import prune_checkpoints
from minigpt.common.errors import InputError
from minigpt.runners.curves import LINE, plot_curves, read_curves


def write_log(folder, rows, broken: int = 0):
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(row) for row in rows] + ['{"step": 9, "loss": 0.'] * broken  # a run killed mid-write
    (folder / "log.jsonl").write_text("\n".join(lines) + "\n")


def test_a_resumed_runs_later_values_win_and_broken_lines_are_counted(tmp_path):
    rows = [{"step": step, "loss": 4.0 / step, "lr": 1e-3, "grad_norm": 2.0} for step in (1, 2, 3, 4)]
    rows += [{"epoch": 0, "epoch_samples": {}}, {"step": 3, "loss": 9.0, "lr": 1e-3, "grad_norm": 1.0}]  # resumed at 2
    write_log(tmp_path, rows, broken=1)
    curves = read_curves(tmp_path / "log.jsonl")
    assert curves.series["loss"] == {1: 4.0, 2: 2.0, 3: 9.0, 4: 1.0} and curves.skipped_lines == 1
    picture = plot_curves(tmp_path)
    assert picture == tmp_path / "curves.png"
    with Image.open(picture) as image:
        pixels = image.convert("RGB").load()
        width, height = image.size
        panel_rows = [[pixels[x, y] == LINE for x in range(width)] for y in range(height)]
    drawn_in = {(y - 30) // 220 for y, row in enumerate(panel_rows) if any(row)}
    assert drawn_in == {0, 1, 2}  # loss, learning rate and gradient norm each have a curve


def test_minigpt_plot_writes_where_asked_and_names_a_missing_log(tmp_path, capsys):
    write_log(tmp_path / "run", [{"step": 1, "loss": 3.0, "lr": 0.1}, {"step": 2, "loss": 1.5, "lr": 0.1}])
    assert main(["plot", str(tmp_path / "run"), "--out", str(tmp_path / "plots" / "loss.png")]) == 0
    assert "loss 3.0000 at step 1 -> 1.5000 at step 2" in capsys.readouterr().out
    assert (tmp_path / "plots" / "loss.png").exists()
    assert main(["plot", str(tmp_path / "nowhere")]) == 2
    assert "no training log here" in capsys.readouterr().err
    write_log(tmp_path / "early", [{"epoch": 0}])
    with pytest.raises(InputError, match="no loss logged yet"):
        plot_curves(tmp_path / "early")


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
