"""Where files are: relative paths in configs are found from the working directory, a checkout's root
or the installed package (which ships train_configs/, eval_configs/ and prompts/). A model folder may
also be named as on the Hugging Face hub (`meta-llama/Llama-2-7b-chat-hf`): it is then looked up in the
local Hugging Face cache (HF_HUB_CACHE / HF_HOME). Downloading is fetch.py's, which the config loader
calls first, so what a config names is on disk before a model is built."""
from __future__ import annotations

import glob
import os
import re
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


HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name


def hub_cache_dir() -> str | None:
    """The Hugging Face cache folder as the environment names it now (huggingface_hub reads it once, at
    import); None: the library's default."""
    return os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or (
        os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None)


# A model folder fetched with only the files we read (fetch.py) is found when these are all there.
MODEL_FOLDER_CORE = ["*.json", "*.model"]


def hub_cache_snapshot(repo_id: str) -> Path | None:
    """The newest cached snapshot of a hub model, or None when the cache does not hold it (no network)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, cache_dir=hub_cache_dir(),
                                      allow_patterns=MODEL_FOLDER_CORE))
    except Exception:  # noqa: BLE001 - not cached (LocalEntryNotFoundError), or a malformed cache entry
        return None


def resolve_model_folder(name: str | Path) -> Path:
    """A model or tokenizer folder: a path as resolve_path finds it, else a hub name found in the local cache."""
    path = resolve_path(name)
    if path.exists() or not HUB_NAME.match(str(name)):
        return path
    return hub_cache_snapshot(str(name)) or path


def shard_paths(pattern: str) -> list[str]:
    """Expand a webdataset brace pattern (`/data/{00000..00099}.tar`) or a glob into files."""
    paths: list[str] = []
    for expanded in braceexpand.braceexpand(pattern):
        matches = sorted(glob.glob(expanded)) if any(c in expanded for c in "*?[") else [expanded]
        paths.extend(matches)
    return paths
