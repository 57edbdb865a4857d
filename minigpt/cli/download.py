"""Fetch the released models' files by name into the caches, so that the shipped configs run offline.

    minigpt download --list                       the names: bundles first, then their parts
    minigpt download minigpt4-vicuna7b            checkpoint, Vicuna v0 7B, EVA ViT-g, Q-Former
    minigpt download meta-llama/Llama-2-7b-chat-hf https://host/eva.pth gdrive://<id>/name.pth

A bundle fetches everything its config (shown by --list) needs: `minigpt chat --cfg-path minigpt4_eval`
then runs as shipped. A URL, hub name or Drive file is fetched as a config setting naming it would be.
Files already in the caches are not fetched again; a cut download resumes. With HF_HUB_OFFLINE=1 it only
checks that the caches hold them. The caches: MINIGPT_CACHE (URLs, Drive), HF_HOME (the hub).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from minigpt.common.errors import InputError
from minigpt.ops.assets import CATALOGUE, Asset, download, files_of, gigabytes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME", help="a name from --list, a URL, a hub name "
                                                                 "(org/name) or gdrive://<id>[/<file name>]")
    parser.add_argument("--list", action="store_true", help="list the names and exit")


def size_text(estimate: tuple[float, bool]) -> str:
    """`gigabytes()`'s estimate: 13.5 GB, 13.5+ GB (some sizes unknown) or ? (none known)."""
    size, known = estimate
    if not size:
        return "?"
    return f"{size:.1f} GB" if known else f"{size:.1f}+ GB"


def config_arguments(asset: Asset) -> str:
    """What a command is given to run the bundle: its config, and the options it needs there."""
    return " ".join(["--cfg-path", asset.config, *(["--options", *asset.options] if asset.options else [])])


def print_catalogue() -> None:
    bundles = [asset for asset in CATALOGUE.values() if asset.parts]
    parts = [asset for asset in CATALOGUE.values() if not asset.parts]
    for title, assets in (("bundles (a released model and what its config needs)", bundles), ("parts", parts)):
        print(f"{title}:")
        for asset in assets:
            print(f"  {asset.name:<30} {size_text(gigabytes(files_of(asset.name))):>9}  {asset.summary}")
            if asset.config:
                print(f"  {'':<30} {'':>9}  runs with: {config_arguments(asset)}")


def describe(path: Path) -> str:
    """A fetched file's size, or a folder's file count and size."""
    files = [item for item in path.rglob("*") if item.is_file()] if path.is_dir() else [path]
    size = sum(item.stat().st_size for item in files)
    amount = f"{size / 1e9:.2f} GB" if size >= 1e8 else f"{size / 1e6:.1f} MB"
    return f"{len(files)} files, {amount}" if path.is_dir() else amount


def run(args: argparse.Namespace) -> int:
    if args.list:
        print_catalogue()
        return 0
    if not args.names:
        raise InputError("name what to download (`minigpt download --list` shows the names)")
    for name, file, path in download(args.names):
        label = file.value if file.value == name else f"{name}: {file.value}"
        print(f"{label} -> {path} ({describe(path)})", flush=True)
    return 0
