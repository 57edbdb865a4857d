"""Convert a pickled checkpoint (.pth, .pt, .bin) to safetensors, saying what it would run before it runs.

    minigpt convert-checkpoint FILE [--out OUT.safetensors] [--trust]

Unpickling calls whatever the file names, so `read_weights` refuses a .pth that names more than the
globals torch's weights_only loader allows. This is the one deliberate way past that refusal:

1. The globals the file would import are read from its pickle opcodes (common/pickle_scan.py): nothing
   is imported or called, and each is marked allowed or not by the weights_only loader.
2. A file of plain tensors is then loaded with weights_only=True and converted at once.
3. Any other file is unpickled (weights_only=False) only with --trust, once the user has read that list
   and trusts where the file came from.

The weights are `checkpoint["model"]` when there is one (MiniGPT-4's layout, beside "optimizer",
"epoch" ...), else the object itself (a state dict, or a whole pickled module's state_dict()). Only its
tensors are written; everything else is named as dropped. The safetensors file is written to a
temporary name and renamed, so an interrupted conversion leaves nothing half-written.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from minigpt.common.checkpoint import load_tensors_only
from minigpt.common.errors import InputError
from minigpt.common.pickle_scan import NotAPickleError, PickleScan, scan_pickle


class ConvertError(InputError):
    """A file that cannot be converted, or will not be without --trust."""


@dataclass
class Conversion:
    out: Path
    source: str                 # where the weights were: 'checkpoint["model"]' or 'the file'
    kept: int                   # tensors written
    dropped: list[str] = field(default_factory=list)  # "name (type)" of everything else


def inspect_file(path: str | Path) -> PickleScan:
    """What `path` would import when unpickled, read without running it; ConvertError when it is no
    pickled file at all."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        raise ConvertError(f"{path}: already safetensors; model.ckpt and the other weight settings load it as it is")
    try:
        return scan_pickle(path)
    except NotAPickleError as error:
        raise ConvertError(f"{path}: not a pickled checkpoint, nothing to convert ({error})") from None


def describe(scan: PickleScan) -> str:
    """The list the user reads before deciding: each global, and whether weights_only would import it."""
    lines = [f"{scan.path} ({scan.layout}) would import, when unpickled:"]
    width = max((len(found.shown) for found in scan.globals), default=0)
    for found in scan.globals:
        verdict = "allowed by torch's weights_only loader" if found.allowed else "NOT allowed: can run code"
        lines.append(f"  {found.shown:<{width}}  {verdict}")
    if not scan.globals:
        lines.append("  nothing (plain numbers, strings and containers)")
    return "\n".join(lines)


def default_out(path: str | Path) -> Path:
    return Path(path).with_suffix(".safetensors")


def convert(scan: PickleScan, out: str | Path | None = None, trust: bool = False) -> Conversion:
    """Load the scanned file (weights_only unless it needs --trust and has it) and write its tensors to
    `out` (default: FILE with the suffix .safetensors), which must not exist yet."""
    out = Path(out) if out else default_out(scan.path)
    if out.exists():
        raise ConvertError(f"--out {out}: exists; choose another path (nothing is overwritten)")
    if scan.unsafe and not trust:
        raise ConvertError(f"{scan.path}: not converted: unpickling it would import and run "
                           f"{', '.join(scan.unsafe)}; rerun with --trust if you trust where the file came from")
    loaded = _unpickle_trusted(scan) if scan.unsafe else load_tensors_only(scan.path)
    tensors, source, dropped = tensors_of(loaded)
    if not tensors:
        raise ConvertError(f"{scan.path}: {source} holds no tensors, nothing to convert")
    write_atomically(tensors, out, {"format": "pt", "converted_from": scan.path.name})
    return Conversion(out, source, len(tensors), dropped)


def _unpickle_trusted(scan: PickleScan) -> object:
    """The file's object, unpickled with everything it names: only ever called under --trust. A plain
    pickle is read by pickle.load, since torch.load takes its object for a legacy file's magic number."""
    try:
        if scan.layout == "plain pickle":
            with open(scan.path, "rb") as file:
                return pickle.load(file)
        return torch.load(scan.path, map_location="cpu", weights_only=False)
    except Exception as error:  # the file's own code failed, or named a module that is not installed
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        raise ConvertError(f"{scan.path}: unpickling failed ({reason})") from error


def tensors_of(loaded: object) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """(the tensors to write, where they were, "name (type)" of everything dropped). Each tensor is a
    contiguous copy with storage of its own: safetensors refuses views and tensors that share storage
    (tied weights), and a checkpoint holds both."""
    source, weights, dropped = "the file", loaded, []
    if isinstance(loaded, Mapping) and isinstance(loaded.get("model"), (Mapping, nn.Module)):
        source, weights = 'checkpoint["model"]', loaded["model"]
        dropped = [f"{key} ({type(value).__name__})" for key, value in loaded.items() if key != "model"]
    if isinstance(weights, nn.Module):
        weights = weights.state_dict()
    if not isinstance(weights, Mapping):
        raise ConvertError(f"{source} is a {type(weights).__name__}, not a dict of weights")
    tensors = {}
    for key, value in weights.items():
        if isinstance(key, str) and isinstance(value, torch.Tensor) and value.layout == torch.strided:
            tensors[key] = value.detach().to("cpu").clone(memory_format=torch.contiguous_format)
        else:
            dropped.append(f"{key} ({type(value).__name__})")
    return tensors, source, dropped


def write_atomically(tensors: dict[str, torch.Tensor], out: Path, metadata: dict[str, str]) -> None:
    """save_file into a temporary file beside `out`, then rename: `out` is whole or absent."""
    temporary = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, temporary, metadata=metadata)
        os.replace(temporary, out)
    except OSError as error:  # a full disk, a read-only folder
        temporary.unlink(missing_ok=True)
        raise ConvertError(f"--out {out}: could not be written ({error.strerror or error})") from error
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
