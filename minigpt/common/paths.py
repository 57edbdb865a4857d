"""Where files are: relative paths in configs are found from the working directory, a checkout's root
or the installed package (which ships train_configs/, eval_configs/ and prompts/)."""
from __future__ import annotations

import glob
import os
from pathlib import Path

import braceexpand

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_ROOT.parent


def resolve_path(path: str | Path) -> Path:
    """A relative path is tried against the working directory, the repository root, then the package."""
    candidate = Path(os.path.expanduser(str(path)))
    if candidate.is_absolute() or candidate.exists():
        return candidate
    for root in (REPO_ROOT, PACKAGE_ROOT):
        if (root / candidate).exists():
            return root / candidate
    return candidate


def shard_paths(pattern: str) -> list[str]:
    """Expand a webdataset brace pattern (`/data/{00000..00099}.tar`) or a glob into files."""
    paths: list[str] = []
    for expanded in braceexpand.braceexpand(pattern):
        matches = sorted(glob.glob(expanded)) if any(c in expanded for c in "*?[") else [expanded]
        paths.extend(matches)
    return paths
