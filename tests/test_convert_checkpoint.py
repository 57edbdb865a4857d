"""A pickled checkpoint that would run code is refused in one line naming the file, what it would run
and `minigpt convert-checkpoint`; that command lists what a file imports without running it, converts
plain tensors at once and anything else only with --trust."""
import argparse
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import REPO, stage2_options
from minigpt.cli.main import main as minigpt_main
from minigpt.common.checkpoint import RefusedPickleError, read_weights
from minigpt.common.pickle_scan import scan_pickle


class Exploit:
    """Unpickled, it runs `touch MARKER`: the marker existing means the file's code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def save(obj, path: Path, how: str) -> Path:
    """`obj` written the way `how` names: pickle.dump at a protocol, or torch.save zip / legacy."""
    if how.startswith("pickle-"):
        with open(path, "wb") as file:
            pickle.dump(obj, file, protocol=int(how.removeprefix("pickle-")))
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=how == "torch-zip")
    return path


def weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return dict(nn.Linear(4, 3).state_dict())


def one_error_line(stderr: str, command: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith(f"minigpt {command}: error: "), lines[0]
    assert "weights_only=False" not in lines[0] and "WeightsUnpickler" not in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("how", ["pickle-2", "pickle-5", "torch-zip", "torch-legacy"])
def test_the_list_names_what_a_file_would_run_and_nothing_runs(how, tmp_path, capsys):
    marker = tmp_path / "MARKER"
    path = save({"model": weights(), "payload": Exploit(marker)}, tmp_path / "evil.pth", how)
    assert minigpt_main(["convert-checkpoint", str(path)]) == 2
    out, err = capsys.readouterr()
    assert re.search(r"^  os\.system +NOT allowed", out, re.MULTILINE), out
    line = one_error_line(err, "convert-checkpoint")
    assert f"{path}: not converted" in line and "os.system" in line and "rerun with --trust" in line
    assert not marker.exists() and not (tmp_path / "evil.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pth"]  # no temporary file either


def test_memoised_names_are_followed(tmp_path):
    """Protocol 4+ names a global by two strings, and a second use of a string comes from the memo
    (BINGET): os.getcwd's module string is the one os.system stored."""
    class Getcwd:
        def __reduce__(self):
            return (os.getcwd, ())

    path = tmp_path / "memo.pkl"
    path.write_bytes(pickle.dumps([Exploit(tmp_path / "MARKER"), Getcwd(), torch.ones(2)], protocol=5))
    scan = scan_pickle(path)
    assert scan.layout == "plain pickle" and scan.unsafe[:2] == ["os.system", "os.getcwd"], scan
    assert any(found.name == "torch._utils._rebuild_tensor_v2" and found.allowed for found in scan.globals)


def test_a_file_of_plain_tensors_converts_without_trust(tmp_path, capsys):
    base = torch.arange(12.0).reshape(3, 4)
    state = {"w": base, "w_t": base.t(), "tied": base, "row": base[1]}  # views and shared storage
    path = save(state, tmp_path / "plain.pth", "torch-zip")
    assert minigpt_main(["convert-checkpoint", str(path)]) == 0
    out = capsys.readouterr().out
    assert "NOT allowed" not in out and "wrote" in out, out
    converted = read_weights(tmp_path / "plain.safetensors")
    assert converted.keys() == state.keys()
    assert all(torch.equal(converted[key], value) for key, value in state.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.pth", "plain.safetensors"]
    assert minigpt_main(["convert-checkpoint", str(path)]) == 2  # nothing is overwritten
    assert "exists" in one_error_line(capsys.readouterr().err, "convert-checkpoint")


def test_minigpt4_layout_converts_under_trust_keeping_only_the_weights(tmp_path, capsys):
    state, marker = weights(), tmp_path / "MARKER"
    checkpoint = {"model": state, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "epoch": 3,
                  "args": argparse.Namespace(lr=1e-4), "payload": Exploit(marker)}
    path = save(checkpoint, tmp_path / "minigpt4.pth", "torch-zip")
    out = tmp_path / "converted" / "weights.safetensors"
    assert minigpt_main(["convert-checkpoint", str(path), "--out", str(out)]) == 2
    assert not marker.exists() and not out.exists()
    capsys.readouterr()

    assert minigpt_main(["convert-checkpoint", str(path), "--out", str(out), "--trust"]) == 0
    printed = capsys.readouterr().out
    assert marker.exists()  # --trust does unpickle everything the file names, as the list said
    assert "argparse.Namespace" in printed and 'from checkpoint["model"]' in printed
    for dropped in ("optimizer (dict)", "epoch (int)", "args (Namespace)"):
        assert dropped in printed, printed
    converted = read_weights(out)
    assert converted.keys() == state.keys() and all(torch.equal(converted[k], v) for k, v in state.items())


@pytest.mark.parametrize("how", ["pickle-5", "torch-zip", "torch-legacy"])
def test_read_weights_refuses_in_one_line_naming_the_convert_command(how, tmp_path):
    marker = tmp_path / "MARKER"
    path = save({"model": {"w": torch.ones(2), "x": Exploit(marker)}}, tmp_path / "evil.pth", how)
    with pytest.raises(RefusedPickleError) as refused:
        read_weights(path)
    message = str(refused.value)
    assert "\n" not in message and "weights_only" not in message, message
    assert message.startswith(f"{path}: refused") and "os.system" in message
    assert message.endswith(f"minigpt convert-checkpoint {path}")
    assert not marker.exists()


@pytest.mark.parametrize("key", ["ckpt", "vit_weights", "q_former_model"])
def test_minigpt_train_refuses_a_malicious_weights_file_in_one_line(key, tmp_path, shapes_dir, capfd, torch_state):
    marker = tmp_path / "MARKER"
    path = save({"model": {"w": torch.ones(2)}, "x": Exploit(marker)}, tmp_path / "evil.pth", "torch-zip")
    options = [*stage2_options(shapes_dir), "model.ckpt=null", f"run.output_dir={tmp_path / 'out'}",
               f"model.{key}={path}"]
    assert minigpt_main(["train", "--cfg-path", "train_configs/tiny_stage2.yaml", "--options", *options]) == 2
    line = one_error_line(capfd.readouterr().err, "train")
    assert f"{path}: refused" in line and "os.system" in line and f"minigpt convert-checkpoint {path}" in line
    assert not marker.exists()


def test_minigpt_chat_refuses_a_malicious_ckpt_in_one_line(tmp_path, shapes_dir):
    """The console command, in a fresh interpreter: what a user sees."""
    marker = tmp_path / "MARKER"
    path = save({"model": Exploit(marker)}, tmp_path / "evil.pth", "pickle-5")
    image = next((shapes_dir / "images").iterdir())
    result = subprocess.run([sys.executable, "-m", "minigpt", "chat", "--cfg-path", "eval_configs/tiny_eval.yaml",
                             "--options", f"model.tokenizer={shapes_dir}/tokenizer", f"model.ckpt={path}",
                             "--image", str(image), "--prompt", "What is in the image?",
                             "--save-dir", str(tmp_path / "demo")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr, "chat")
    assert f"{path}: refused" in line and "os.system" in line and f"minigpt convert-checkpoint {path}" in line
    assert not marker.exists()
