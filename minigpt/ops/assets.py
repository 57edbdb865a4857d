"""The released models' files by short name, for `minigpt download`: the LLMs the original README names,
the EVA ViT-g and BLIP-2 Q-Former weights, and the released MiniGPT-4 / MiniGPT-v2 checkpoints.

Each file is written as a config names it (a hub repository, an http(s) URL, `gdrive://<id>/<name>`),
and is fetched by common/fetch.py as that config setting would fetch it, into the same caches: once
`minigpt download minigpt4-vicuna7b` has run, `minigpt chat --cfg-path minigpt4_eval` finds every file
offline. A bundle (minigpt4-vicuna7b) is its checkpoint plus the parts its shipped config needs.

The sizes are about what a download takes (16-bit LLM weights); where not known they are left out, and
so is a sha256: the first fetch of a URL or Drive file records the one it got, and later uses check it.
"""
from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from minigpt.common.errors import FetchError, InputError
from minigpt.common.fetch import LLM_FOLDER, VISION_TOWER_FOLDER, WEIGHTS_FOLDER, Source, fetch_source, hub_file, parse_source
from minigpt.models.hf_blip2 import QFORMER_PREFIXES, VISION_PREFIXES

LAVIS = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2"


@dataclass(frozen=True)
class AssetFile:
    """One thing to fetch: `value` as a config writes it; of a hub folder, the files (`patterns`) and, of
    a sharded one, the tensors whose shards are needed (`prefixes`)."""

    value: str
    patterns: tuple[str, ...] | None = None
    prefixes: tuple[str, ...] | None = None
    sha256: str | None = None
    gigabytes: float | None = None


@dataclass(frozen=True)
class Asset:
    name: str
    summary: str
    files: tuple[AssetFile, ...] = ()
    parts: tuple[str, ...] = ()  # the other names a bundle fetches
    config: str | None = None  # the shipped config that runs with it
    options: tuple[str, ...] = ()  # and what that config needs changed for it (--options)


def _llm(name: str, repo_id: str, summary: str, gigabytes: float) -> Asset:
    return Asset(name, f"{summary} (hub: {repo_id})", (AssetFile(repo_id, LLM_FOLDER, gigabytes=gigabytes),))


def _checkpoint(name: str, source: str, summary: str) -> Asset:
    return Asset(name, f"{summary} (Google Drive)", (AssetFile(source),))


def _bundle(name: str, summary: str, checkpoint: str, parts: tuple[str, ...], config: str,
            options: tuple[str, ...] = ()) -> Asset:
    return Asset(name, summary, parts=(checkpoint, *parts), config=config, options=options)


MINIGPT4_PARTS = ("eva-vit-g", "blip2-qformer")
VICUNA_13B_CHECKPOINT = "gdrive://1a4zLvaiDBr-36pasffmgpvH5P7CKmpze/pretrained_minigpt4_13b.pth"
CATALOGUE: dict[str, Asset] = {asset.name: asset for asset in (
    _bundle("minigpt4-vicuna7b", "MiniGPT-4 with Vicuna v0 7B: checkpoint, LLM, EVA ViT-g, Q-Former",
            "minigpt4-vicuna7b-checkpoint", ("vicuna-7b-v0", *MINIGPT4_PARTS), "minigpt4_eval"),
    _bundle("minigpt4-vicuna13b", "MiniGPT-4 with Vicuna v0 13B: checkpoint, LLM, EVA ViT-g, Q-Former",
            "minigpt4-vicuna13b-checkpoint", ("vicuna-13b-v0", *MINIGPT4_PARTS), "minigpt4_eval",
            ("model.llama_model=Vision-CAIR/vicuna", f"model.ckpt={VICUNA_13B_CHECKPOINT}")),
    _bundle("minigpt4-llama2", "MiniGPT-4 with Llama-2 chat 7B: checkpoint, LLM (gated), EVA ViT-g",
            "minigpt4-llama2-checkpoint", ("llama-2-7b-chat", "eva-vit-g"), "minigpt4_llama2_eval"),
    _bundle("minigptv2-stage2", "MiniGPT-v2 after stage 2 (multi-task): checkpoint, Llama-2 (gated), EVA ViT-g",
            "minigptv2-stage2-checkpoint", ("llama-2-7b-chat", "eva-vit-g"), "minigptv2_benchmark_evaluation"),
    _bundle("minigptv2-stage3", "MiniGPT-v2 after stage 3 (chat): checkpoint, Llama-2 (gated), EVA ViT-g",
            "minigptv2-stage3-checkpoint", ("llama-2-7b-chat", "eva-vit-g"), "minigptv2_eval"),
    _bundle("qwen2-siglip", "Qwen2.5-7B + SigLIP so400m, for qwen2_siglip_stage1_pretrain (no released checkpoint: "
            "train it)", "qwen2.5-7b-instruct", ("siglip-so400m-224",), "qwen2_siglip_stage1_pretrain"),
    _bundle("llama3-minigptv2", "Llama-3.1-8B + EVA ViT-g, for llama3_minigptv2_multitask (no released checkpoint: "
            "train it)", "llama-3.1-8b-instruct", ("eva-vit-g",), "llama3_minigptv2_multitask"),
    _llm("qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct", "Qwen2.5 7B Instruct, with its ChatML template", 15.2),
    _llm("llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct",
         "Llama-3.1 8B Instruct, gated: accept its licence first", 16.1),
    Asset("siglip-so400m-224", "SigLIP so400m at 224 px, an image encoder (hub: google/siglip-so400m-patch14-224; "
                               "the text tower's weights come along in its one file)",
          (AssetFile("google/siglip-so400m-patch14-224", VISION_TOWER_FOLDER, gigabytes=3.5),)),
    _llm("vicuna-7b-v0", "Vision-CAIR/vicuna-7b", "Vicuna v0 7B, MiniGPT-4's 7B LLM", 13.5),
    _llm("vicuna-13b-v0", "Vision-CAIR/vicuna", "Vicuna v0 13B, MiniGPT-4's 13B LLM", 26.0),
    _llm("llama-2-7b-chat", "meta-llama/Llama-2-7b-chat-hf", "Llama-2 7B chat, gated: accept its licence first",
         13.5),
    Asset("eva-vit-g", "EVA-CLIP ViT-g, the image encoder (LAVIS's eva_vit_g.pth)",
          (AssetFile(f"{LAVIS}/eva_vit_g.pth"),)),
    Asset("blip2-qformer", "BLIP-2's Q-Former, query tokens and ln_vision (LAVIS's blip2_pretrained_flant5xxl.pth)",
          (AssetFile(f"{LAVIS}/blip2_pretrained_flant5xxl.pth"),)),
    Asset("blip2-flan-t5-xxl-vision", "the same ViT and Q-Former from the hub: only the shards holding them "
                                      "(hub: Salesforce/blip2-flan-t5-xxl)",
          (AssetFile("Salesforce/blip2-flan-t5-xxl", WEIGHTS_FOLDER, VISION_PREFIXES + QFORMER_PREFIXES),)),
    # The README's Drive links (file ids); the name is what the cached copy is called.
    _checkpoint("minigpt4-vicuna7b-checkpoint", "gdrive://1RY9jV0dyqLX-o38LrumkKRh6Jtaop58R/pretrained_minigpt4_7b.pth",
                "MiniGPT-4 Vicuna 7B projector"),
    _checkpoint("minigpt4-vicuna13b-checkpoint", VICUNA_13B_CHECKPOINT, "MiniGPT-4 Vicuna 13B projector"),
    _checkpoint("minigpt4-llama2-checkpoint",
                "gdrive://11nAPjEok8eAGGEG1N2vXo3kBLCg0WgUk/pretrained_minigpt4_llama2_7b.pth",
                "MiniGPT-4 Llama-2 7B projector"),
    _checkpoint("minigptv2-stage2-checkpoint", "gdrive://1Vi_E7ZtZXRAQcyz4f8E6LtLh2UXABCmu/minigptv2_stage2.pth",
                "MiniGPT-v2 after stage 2: projector and LoRA"),
    _checkpoint("minigptv2-stage3-checkpoint", "gdrive://1HkoUUrjzFGn33cSiUkI-KcT-zysCynAz/minigptv2_stage3.pth",
                "MiniGPT-v2 after stage 3: projector and LoRA"),
    _checkpoint("minigptv2-demo-checkpoint", "gdrive://1aVbfW7nkCSYx99_vCRyP1sOlQiWVSnAl/minigptv2_demo.pth",
                "MiniGPT-v2 of the online demo: projector and LoRA"),
)}


def files_of(name: str, assets: Mapping[str, Asset] | None = None) -> list[AssetFile]:
    """Every file a name fetches, a bundle's parts included, each once; an unknown name is a one-line
    InputError naming the close ones."""
    assets = CATALOGUE if assets is None else assets  # (read at call time: a test may stand in another)
    if name not in assets:
        close = difflib.get_close_matches(name, list(assets), n=4, cutoff=0.5)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise InputError(f"no asset named '{name}'{hint}; `minigpt download --list` shows them all, and a URL, "
                         "hub name or gdrive://<id> is fetched as given")
    asset = assets[name]
    found = list(asset.files) + [file for part in asset.parts for file in files_of(part, assets)]
    return list(dict.fromkeys(found))


def gigabytes(files: list[AssetFile]) -> tuple[float, bool]:
    """About how many GB the files take, and whether every file's size is known."""
    return sum(file.gigabytes or 0 for file in files), all(file.gigabytes is not None for file in files)


def direct_file(value: str) -> AssetFile:
    """A URL, hub name or Drive file given instead of a catalogue name, fetched as a config setting naming
    it would be: a hub repository as a model folder (config, tokenizer, weights), a BLIP-2 repository as
    only the shards of its ViT and Q-Former."""
    source = parse_source(value)
    if source.kind != "hub" or source.filename:
        return AssetFile(value)
    if _model_type(source) == "blip-2":
        return AssetFile(value, WEIGHTS_FOLDER, VISION_PREFIXES + QFORMER_PREFIXES)
    return AssetFile(value, LLM_FOLDER)


def _model_type(source: Source) -> str | None:
    """The hub repository's config.json model_type (None without one, or offline without a copy)."""
    try:
        config = hub_file(source.repo_id, "config.json", source.revision)
    except FetchError:
        return None
    return json.loads(config.read_text()).get("model_type")


def fetch_file(file: AssetFile) -> Path:
    """The file's local copy, fetched unless the cache holds it (fetch.py: resumable, verified)."""
    return fetch_source(parse_source(file.value), patterns=file.patterns, prefixes=file.prefixes, sha256=file.sha256)


def download(names: list[str]) -> Iterator[tuple[str, AssetFile, Path]]:
    """Fetch each name's files (a catalogue name, or a URL / hub name / Drive file given directly);
    -> (name, file, where it landed), one at a time, so that what was fetched is shown before a later
    file fails. Every name is checked before anything is fetched."""
    for name in names:
        if name not in CATALOGUE and parse_source(name).kind == "path":
            files_of(name)  # raises: neither a name nor something to fetch
    for name in names:
        for file in files_of(name) if name in CATALOGUE else [direct_file(name)]:
            try:
                yield name, file, fetch_file(file)
            except FetchError as error:
                raise FetchError(error.problem, name) from None
