"""What a pickled file would import when loaded, read from its opcodes without running any of it.

Unpickling calls whatever the file names (`os.system`, `builtins.eval`): a .pth is a program as much as
it is data. torch's weights_only loader refuses every global outside its list of tensor-building ones;
this module reads the same names statically (`pickletools.genops` only decodes opcodes, it imports and
calls nothing), so that a refusal can say what the file would have run, and `minigpt
convert-checkpoint` can list it before the user decides whether to trust the file.

Three layouts are read: a torch.save zip (every *.pkl in it; torch unpickles data.pkl), a legacy torch
file (a run of pickles: magic number, protocol, system info, the object, storage keys; raw bytes
follow), and a plain pickle.
"""
from __future__ import annotations

import itertools
import pickletools
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch._weights_only_unpickler as weights_only_unpickler

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER: the first pickle of a legacy file
LEGACY_PICKLES = 5  # magic number, protocol version, system info, the object, storage keys
NAMED_AT_LOAD_TIME = "(a global whose name is computed while loading)"
# Modules pickle records under another name than the one users know: os.system is stored as posix.system.
SHOWN_AS = {"posix": "os", "nt": "os", "__builtin__": "builtins"}

STRING_OPCODES = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
                  "SHORT_BINSTRING"}
GET_OPCODES = {"GET", "BINGET", "LONG_BINGET"}
PUT_OPCODES = {"PUT", "BINPUT", "LONG_BINPUT"}


class NotAPickleError(ValueError):
    """The file (or its first pickle) does not decode as a pickle: noise, a text file, a cut-off file."""


@dataclass(frozen=True)
class PickleGlobal:
    name: str      # module.qualname as stored in the file (posix.system)
    allowed: bool  # torch's weights_only loader would import it

    @property
    def shown(self) -> str:
        """The name as a user knows it: os.system for posix.system."""
        module, dot, rest = self.name.partition(".")
        return f"{SHOWN_AS.get(module, module)}{dot}{rest}"


@dataclass(frozen=True)
class PickleScan:
    path: Path
    layout: str  # "torch zip", "legacy torch file" or "plain pickle"
    globals: tuple[PickleGlobal, ...]

    @property
    def unsafe(self) -> list[str]:
        """The globals weights_only refuses, as users know them, each once, in file order."""
        return list(dict.fromkeys(found.shown for found in self.globals if not found.allowed))


def weights_only_allowed() -> set[str]:
    """The globals torch.load(weights_only=True) imports: torch's own list and any the caller added with
    torch.serialization.add_safe_globals / safe_globals. torch exposes this only through private helpers
    (the public get_unsafe_globals_in_checkpoint reads zip files with protocol-2 opcodes alone)."""
    return set(weights_only_unpickler._get_allowed_globals()) | set(weights_only_unpickler._get_user_allowed_globals())


def globals_in_pickle(stream: BinaryIO) -> list[str]:
    """Every global one pickle in `stream` would import, in order; the stream is left after its STOP.

    GLOBAL and INST carry the name; STACK_GLOBAL (protocol 4+) takes module and name from the two strings
    pushed just before it, directly or from the memo. A STACK_GLOBAL whose strings are not known that way
    is listed as NAMED_AT_LOAD_TIME (never allowed), and an extension-registry code (EXT1/2/4) by its number.
    """
    found: list[str] = []
    memo: dict[int, object] = {}
    pushed: list[object] = []  # what the last opcodes pushed, when it is a known string; [] after anything else
    try:
        for opcode, arg, _ in pickletools.genops(stream):
            name = opcode.name
            if name in STRING_OPCODES or name in GET_OPCODES:
                pushed.append(arg if name in STRING_OPCODES else memo.get(arg))
                continue
            if name in PUT_OPCODES or name == "MEMOIZE":  # store the top of the stack; the stack is unchanged
                memo[arg if name in PUT_OPCODES else len(memo)] = pushed[-1] if pushed else None
                continue
            if name in ("GLOBAL", "INST"):
                found.append(arg.replace(" ", ".", 1))
            elif name == "STACK_GLOBAL":
                module, qualname = ([None, None] + pushed)[-2:]
                known = isinstance(module, str) and isinstance(qualname, str)
                found.append(f"{module}.{qualname}" if known else NAMED_AT_LOAD_TIME)
            elif name.startswith("EXT"):
                found.append(f"copyreg extension {arg}")
            if name != "FRAME":  # FRAME only announces a length
                pushed = []
    except (ValueError, EOFError, UnicodeDecodeError) as error:  # genops' words for bytes that are no pickle
        raise NotAPickleError(str(error) or type(error).__name__) from None
    return found


def _starts_legacy_torch_file(stream: BinaryIO) -> bool:
    """Whether the file opens as torch's legacy format does, with a pickle of its magic number alone
    (PROTO, LONG1 magic, STOP); the stream is rewound."""
    start = stream.tell()
    try:
        opcodes = list(itertools.islice(pickletools.genops(stream), 3))
    except (ValueError, EOFError, UnicodeDecodeError):
        return False
    finally:
        stream.seek(start)
    return [opcode.name for opcode, _, _ in opcodes] == ["PROTO", "LONG1", "STOP"] and opcodes[1][1] == LEGACY_MAGIC


def scan_pickle(path: str | Path) -> PickleScan:
    """The globals a torch.load(weights_only=False) or pickle.load of `path` would import, each marked
    allowed or not by torch's weights_only loader; NotAPickleError when the file is no pickle at all."""
    path = Path(path)
    allowed = weights_only_allowed()
    if zipfile.is_zipfile(path):
        layout, names = "torch zip", []
        try:
            with zipfile.ZipFile(path) as archive:
                members = [member for member in archive.namelist() if member.endswith(".pkl")]
                if not members:
                    raise NotAPickleError("a zip file with no data.pkl in it: not a torch.save file")
                for member in members:
                    with archive.open(member) as stream:
                        names += globals_in_pickle(stream)
        except zipfile.BadZipFile as error:
            raise NotAPickleError(f"a damaged zip file ({error})") from None
    else:
        with open(path, "rb") as stream:  # pickle.load reads the first pickle alone; torch's legacy loader, five
            legacy = _starts_legacy_torch_file(stream)
            names = [name for _ in range(LEGACY_PICKLES if legacy else 1) for name in globals_in_pickle(stream)]
        layout = "legacy torch file" if legacy else "plain pickle"
    return PickleScan(path, layout, tuple(PickleGlobal(name, name in allowed) for name in dict.fromkeys(names)))

