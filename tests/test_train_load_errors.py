"""Every bad annotation file and bad checkpoint the suite knows ends `minigpt train` the way it ends
`minigpt check-data`'s readers: exit status 2, one line naming the file (and record), no traceback.
Training reads these files inside the recipe's setup, so an error there must get through its cleanup
(close() once hid it behind an AttributeError), in one process and under torchrun alike."""
import argparse
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from conftest import REPO, stage2_options
from minigpt.cli.main import main as minigpt_main

STAGE2 = "train_configs/tiny_stage2.yaml"
TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")


def _annotation(name: str, content: bytes | str):
    """A case: `content` written as the stage-2 data set's annotation file `name`."""
    def make(folder: Path, shapes: Path) -> list[str]:
        path = folder / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return [f"datasets.sharegpt4v.build_info.ann_path={path}"]
    return make


def _checkpoint(write):
    """A case: `write(folder) -> path` makes the file or folder given as model.ckpt."""
    def make(folder: Path, shapes: Path) -> list[str]:
        return [f"datasets.sharegpt4v.build_info.ann_path={shapes}/train.json", f"model.ckpt={write(folder)}"]
    return make


def _bom(folder: Path, shapes: Path) -> list[str]:
    path = folder / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + (shapes / "train.json").read_bytes())  # as some Windows editors save
    return [f"datasets.sharegpt4v.build_info.ann_path={path}"]


def _folder_as_ann_path(folder: Path, shapes: Path) -> list[str]:
    (folder / "annotations").mkdir()
    return [f"datasets.sharegpt4v.build_info.ann_path={folder / 'annotations'}"]


def _random_bytes(folder: Path) -> Path:
    path = folder / "random.pth"
    path.write_bytes(random.Random(0).randbytes(4096))
    return path


def _refused_pickle(folder: Path) -> Path:
    path = folder / "objects.pth"
    torch.save({"model": {"args": argparse.Namespace(lr=1)}}, path)  # loading it would run code: refused
    return path


def _truncated_safetensors(folder: Path) -> Path:
    path = folder / "model.safetensors"
    save_file({"weight": torch.randn(64, 64)}, path)
    path.write_bytes(path.read_bytes()[:1000])  # cut short, as by a full disk or an interrupted copy
    return path


def _zeroed_checkpoint_folder(folder: Path) -> Path:
    (folder / "checkpoint").mkdir()
    (folder / "checkpoint" / "model.safetensors").write_bytes(b"\x00" * 16)
    return folder / "checkpoint"


def _empty_folder(folder: Path) -> Path:
    (folder / "empty").mkdir()
    return folder / "empty"


DEEP = "[" * 100_000 + "]" * 100_000
GOOD = '{"id": "a", "image": "img_000000.jpg", "conversations": []}'
# id -> (writes the bad input and returns the --options that name it, fragments the error line must hold)
CASES = {
    "malformed-json-record": (_annotation("bad.json", f'[{GOOD}, {{"id": 2,,}}]'),
                              ["bad.json: record 1: malformed JSON"]),
    "broken-jsonl-row": (_annotation("ann.jsonl", '{"id": 1}\n\n{"id": 2}\n{"id": 3\n'),
                         ["ann.jsonl: record 2: malformed JSON on line 4"]),
    "deep-json": (_annotation("deep.json", DEEP), ["deep.json: JSON nested too deeply"]),
    "deep-jsonl": (_annotation("deep.jsonl", '{"id": 1}\n' + DEEP + "\n"),
                   ["deep.jsonl: record 1: line 2 is JSON nested too deeply"]),
    "utf8-bom": (_bom, ["bom.json", "BOM"]),
    "non-utf8-bytes": (_annotation("latin1.json", '[{"id": "caf\xe9"}]'.encode("latin-1")), ["latin1.json", "utf-8"]),
    "folder-as-ann-path": (_folder_as_ann_path, ["annotations", "directory"]),
    "not-a-list": (_annotation("shape.json", '{"data": []}'), ["shape.json: expected a list of records"]),
    "no-records": (_annotation("empty.json", "[]"), ["sharegpt4v", "0 samples"]),
    "ckpt-random-bytes": (_checkpoint(_random_bytes), ["random.pth"]),
    "ckpt-objects-not-tensors": (_checkpoint(_refused_pickle), ["objects.pth: refused, not a file of plain tensors"]),
    "ckpt-truncated-safetensors": (_checkpoint(_truncated_safetensors),
                                   ["model.safetensors: not a readable safetensors file"]),
    "ckpt-zeroed-safetensors": (_checkpoint(_zeroed_checkpoint_folder), ["model.safetensors"]),
    "ckpt-empty-folder": (_checkpoint(_empty_folder), ["empty: neither a checkpoint nor a folder of checkpoints"]),
}
# Every case's message is checked in this process; under torchrun, which costs two interpreters and a
# rendezvous (over 20 s on a busy 2-core machine), one case of each kind shows that the rank's one line
# comes out as it is: an annotation file, a checkpoint file and a checkpoint folder. One runs in the fast
# tier, the others with the slow ones.
UNDER_TORCHRUN = {"ckpt-empty-folder": (), "broken-jsonl-row": pytest.mark.slow,
                  "ckpt-objects-not-tensors": pytest.mark.slow}


def options_for(case: str, tmp_path: Path, shapes_dir: Path) -> tuple[list[str], list[str]]:
    """--options for the tiny stage-2 run with the case's bad input, and the fragments its error must name."""
    make, fragments = CASES[case]
    options = [*stage2_options(shapes_dir), "model.ckpt=null", f"run.output_dir={tmp_path / 'out'}",
               *make(tmp_path, shapes_dir)]  # the case's own ann_path / model.ckpt come last and win
    return options, fragments


def assert_one_line(stderr: str, fragments: list[str]) -> None:
    """One non-blank line, `minigpt train: error: ...` holding every fragment (case aside), no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("minigpt train: error: "), lines[0]
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), (fragment, lines[0])


@pytest.mark.parametrize("case", CASES)
def test_minigpt_train_ends_a_load_error_in_one_line(case, tmp_path, shapes_dir, capfd, torch_state):
    """`minigpt train` in this process (the code train.py and the console command run), stderr captured
    at the file descriptor so that anything a library prints counts too."""
    options, fragments = options_for(case, tmp_path, shapes_dir)
    assert minigpt_main(["train", "--cfg-path", STAGE2, "--options", *options]) == 2
    assert_one_line(capfd.readouterr().err, fragments)
    assert not (tmp_path / "out" / "log.jsonl").exists()  # stopped in setup, before any step


@pytest.mark.parametrize("case", [pytest.param(case, marks=marks) for case, marks in UNDER_TORCHRUN.items()])
def test_torchrun_train_py_ends_a_load_error_in_one_line(case, tmp_path, shapes_dir):
    """Under `torchrun --nproc-per-node 1 train.py` the rank stops with exit status 2 and its one line
    (kept apart by --redirects in the rank's stderr.log). torchrun then adds its own failure report and
    traceback of its launcher, and exits 1: that part is torch's, and is only checked to name the 2."""
    options, fragments = options_for(case, tmp_path, shapes_dir)
    logs = tmp_path / "torchrun-logs"
    result = subprocess.run([TORCHRUN, "--standalone", "--nproc-per-node", "1", "--log-dir", str(logs), "--redirects",
                             "2", "train.py", "--cfg-path", STAGE2, "--options", *options],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert re.search(r"exitcode\s*:\s*2\b", result.stderr), result.stderr
    assert not re.search(r'File ".*[/\\]minigpt[/\\]', result.stderr), result.stderr  # no frame of ours
    rank_stderr = list(logs.rglob("stderr.log"))
    assert len(rank_stderr) == 1, rank_stderr
    assert_one_line(rank_stderr[0].read_text(), fragments)


@pytest.mark.slow
@pytest.mark.parametrize("case, command", [
    ("broken-jsonl-row", ["-m", "minigpt", "train", "--nproc-per-node", "1"]),
    ("ckpt-truncated-safetensors", ["train.py"])])
def test_train_with_ranks_ends_a_rank_load_error_in_one_line(case, command, tmp_path, shapes_dir):
    """`minigpt train --nproc-per-node 1` and `python train.py`: what a user sees, from a fresh
    interpreter. With ranks, the error is found inside the rank (the config itself is valid) and the
    launcher adds nothing to the rank's one line."""
    options, fragments = options_for(case, tmp_path, shapes_dir)
    result = subprocess.run([sys.executable, *command, "--cfg-path", STAGE2, "--options", *options], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stderr
    assert_one_line(result.stderr, fragments)
