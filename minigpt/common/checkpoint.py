"""Checkpoints: trainable weights in safetensors, training state apart, the resolved config beside them.

    <output_dir>/checkpoint_0000200/
        model.safetensors    the model's own weights: trained parts, and parts not loaded from pretrained files
        training_state.pt    optimiser, grad scaler, step (tensors and numbers: loads with weights_only)
        config.yaml          the resolved config that produced it
        deepspeed/           with DeepSpeed: each rank's optimiser partition

A checkpoint is written to a temporary folder and renamed into place, so a killed run never leaves a
half-written checkpoint behind. Anything pickled is loaded with `weights_only=True`, and a file that
names more than tensors is refused in one line saying what it would import (pickle_scan.py) and how to
convert it once the user trusts it (`minigpt convert-checkpoint`, minigpt/ops/convert_checkpoint.py).
"""
from __future__ import annotations

import os
import pickle
import re
import shutil
import warnings
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from minigpt.common.errors import CheckpointError
from minigpt.common.pickle_scan import NotAPickleError, scan_pickle

CHECKPOINT_PATTERN = re.compile(r"^checkpoint_(\d+)$")
CONVERT_COMMAND = "minigpt convert-checkpoint"
MAX_NAMED = 3  # globals a refusal names before "and N more"


class CheckpointWriteError(CheckpointError):
    """A checkpoint that could not be written (a full disk): its partial folder is gone, the last whole one named."""

    def __init__(self, output_dir: str | Path, name: str, error: Exception):
        last = latest_checkpoint(output_dir)
        reason = getattr(error, "strerror", None) or str(error)
        super().__init__(f"{Path(output_dir) / name}: could not be written ({reason}); its partial folder is removed. "
                         f"The last whole checkpoint is {last or 'none (nothing saved yet)'}; once there is room, "
                         "resume with run.resume_ckpt_path=latest")


class RefusedPickleError(CheckpointError, pickle.UnpicklingError):
    """A .pth file holding objects other than tensors: loading it would run code, so it is refused."""


def save_config(config: DictConfig, path: str | Path) -> None:
    OmegaConf.save(config, path, resolve=True)


def staging_folder(output_dir: str | Path, step: int) -> Path:
    """Where a checkpoint is written before it is renamed into place; the same path on every rank."""
    return Path(output_dir) / f".checkpoint_{step:07d}.tmp"


def save_checkpoint(output_dir: str | Path, step: int, weights: dict[str, torch.Tensor], training_state: dict,
                    config=None, staging: Path | None = None) -> Path:
    """Write the checkpoint's files into `staging` (which other ranks may already have written into; a
    fresh folder when None) and rename it to checkpoint_<step>."""
    final = Path(output_dir) / f"checkpoint_{step:07d}"
    temporary = staging
    if temporary is None:
        temporary = final.with_name(f".{final.name}.tmp{os.getpid()}")
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
    try:
        save_file(weights, temporary / "model.safetensors")
        torch.save(training_state, temporary / "training_state.pt")
        if config is not None:
            save_config(config, temporary / "config.yaml")
    except (OSError, RuntimeError) as error:  # a full disk; torch says "unexpected pos ..." for it
        shutil.rmtree(temporary, ignore_errors=True)  # a half-written folder would hold the space for nothing
        raise CheckpointWriteError(output_dir, final.name, error) from error
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
    return final


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return max(found)[1] if found else None


def prune_checkpoints(output_dir: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` checkpoints (at least the newest one stays); -> those deleted.
    Only whole checkpoints have their final name, so the newest kept is always whole."""
    folder = Path(output_dir)
    found = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name)))
    stale = [path for _, path in found[:-max(keep_last, 1)]]
    for path in stale:
        shutil.rmtree(path)
    return stale


def load_training_state(checkpoint_dir: str | Path) -> dict:
    return load_tensors_only(Path(checkpoint_dir) / "training_state.pt", convertible=False)


def load_tensors_only(path: str | Path, map_location: str | torch.device | None = None,
                      convertible: bool = True) -> object:
    """torch.load with weights_only=True, for every pickled file a user can name: one that holds more
    than tensors is refused in one line (refusal()), never with torch's advice to load it unsafely.
    `convertible`: a weights file, which `minigpt convert-checkpoint` can turn into safetensors."""
    try:
        with warnings.catch_warnings():  # torch's note on a protocol-4 pickle, printed just before it refuses it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location or "cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # also what weights_only raises for objects other than tensors
        raise refusal(path, error, convertible) from None  # torch's message advises weights_only=False: not kept


def weights_file(path: str | Path) -> Path:
    """The weights file a path names: a checkpoint folder's model.safetensors (a run folder: its newest
    checkpoint's), or the file itself."""
    path = Path(path)
    if path.is_dir() and not (path / "model.safetensors").exists():
        latest = latest_checkpoint(path)  # a run's output_dir: take its newest checkpoint
        if latest is None:
            raise CheckpointError(f"{path}: neither a checkpoint nor a folder of checkpoints")
        path = latest
    return path / "model.safetensors" if path.is_dir() else path


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint folder (or a run folder: its newest checkpoint), a .safetensors file, or a MiniGPT-4
    .pth ({"model": state_dict}, loaded weights only)."""
    path = weights_file(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except (SafetensorError, OSError) as error:  # a truncated or corrupt file: safetensors does not say which
            raise CheckpointError(f"{path}: not a readable safetensors file ({error}); was it cut short while "
                                  "being written or copied?") from error
    try:
        state = load_tensors_only(path)
    except RefusedPickleError:  # already its one line
        raise
    except Exception as error:  # "PytorchStreamReader failed ..." on a cut file; IndexError, KeyError ... on noise
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        raise CheckpointError(f"{path}: not a readable PyTorch weights file ({reason})") from error
    return state.get("model", state) if isinstance(state, dict) else state


def refusal(path: str | Path, error: pickle.UnpicklingError, convertible: bool = True) -> RefusedPickleError:
    """The one-line refusal of a file torch's weights_only loader would not load. When the file names
    globals beyond tensors (read from its opcodes, never run) the line says which, and, for a weights file
    (`convertible`), the one deliberate way to use a file the user trusts; otherwise the reason is torch's
    first sentence ("Unsupported operand 149" for bytes that are no pickle)."""
    try:
        unsafe = scan_pickle(path).unsafe
    except (NotAPickleError, OSError):
        unsafe = []
    if not unsafe:
        return RefusedPickleError(f"{path}: refused, not a file of plain tensors: {_unpickler_reason(error)}")
    named = ", ".join(unsafe[:MAX_NAMED]) + (f" and {len(unsafe) - MAX_NAMED} more" if len(unsafe) > MAX_NAMED else "")
    message = f"{path}: refused, not a file of plain tensors: unpickling it would import and run {named}"
    if convertible:
        message += f"; if you trust where it came from, convert it to safetensors once with: {CONVERT_COMMAND} {path}"
    return RefusedPickleError(message)


def _unpickler_reason(error: pickle.UnpicklingError) -> str:
    """The one sentence of torch's weights_only message that says what was refused ("Unsupported global:
    GLOBAL x.Y was not an allowed global by default", "Unsupported operand 52" for random bytes): the
    whole message is a page of advice over several lines, and an input error is one line."""
    text = str(error)
    _, marker, reason = text.partition("WeightsUnpickler error:")
    reason = " ".join((reason if marker else text).strip().split("\n\n")[0].split())  # its first paragraph
    return reason.split(". ")[0].rstrip(".") or "not a weights file"
