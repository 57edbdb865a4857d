"""Settings that name weights or data files, resolved to local paths once, when a config loads (before
validation, before any model is built): a local path stays as written, an http(s) URL, a Google Drive
file (`gdrive://<id>/<name>`) or a Hugging Face hub name (`org/name`, `org/name@rev`, `org/name/file.pth`)
is fetched into its cache (common/fetch.py) and replaced by the local path. Everything after the loader
sees plain local paths.

Nothing is downloaded while a local path the config names is missing: that error comes first, so a typo
costs no 2 GB download. A failure names the file that set the key, as every config error does.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from minigpt.common.errors import ConfigError
from minigpt.common.fetch import (LLM_FOLDER, TOKENIZER_FOLDER, VISION_TOWER_FOLDER, WEIGHTS_FOLDER, FetchError, parse_source,
                                  resolve_source)
from minigpt.common.paths import resolve_path
from minigpt.config.validation import source_of
from minigpt.models.hf_blip2 import QFORMER_PREFIXES, VISION_PREFIXES
from minigpt.models.vision_towers import tower_kind

SHARD_PATTERN_CHARS = "{*?["


@dataclass(frozen=True)
class FileSetting:
    """A config key that names a file or folder: `want` is file, folder or any (a hub repository's folder,
    or a file named inside it), `patterns` what a hub folder is fetched with, `prefixes` (of a sharded one)
    the tensors whose shards are fetched."""

    key: str
    want: str = "file"
    patterns: tuple[str, ...] | None = None
    prefixes: tuple[str, ...] | None = None


def model_file_settings(model: DictConfig) -> list[FileSetting]:
    """Every key of the model section that names weights or a file."""
    settings = [
        FileSetting("model.llama_model", "folder", LLM_FOLDER),
        FileSetting("model.tokenizer", "folder", TOKENIZER_FOLDER),
        FileSetting("model.vit_weights", "any", WEIGHTS_FOLDER, VISION_PREFIXES),
        FileSetting("model.q_former_model", "any", WEIGHTS_FOLDER, QFORMER_PREFIXES),
        FileSetting("model.ckpt", "any", WEIGHTS_FOLDER),
        FileSetting("model.llm_adapter", "folder", WEIGHTS_FOLDER),
        FileSetting("model.prompt_path"),
    ]
    settings += [FileSetting(f"model.adapters.{name}.peft_folder", "folder", WEIGHTS_FOLDER) for name in model.adapters]
    settings += [FileSetting(f"model.extra_encoders.{index}.weights") for index in range(len(model.extra_encoders))]
    settings += [FileSetting(f"model.extra_encoders.{index}.vision_model", "folder", VISION_TOWER_FOLDER)
                 for index, extra in enumerate(model.extra_encoders) if extra.vision_model]
    if tower_kind(model.vit_model) == "transformers":  # (eva_clip_g and timm:<name> name no file)
        settings.append(FileSetting("model.vit_model", "folder", VISION_TOWER_FOLDER))
    return settings


def dataset_file_settings(config: DictConfig, prefix: str) -> list[FileSetting]:
    """A data set section's files (`prefix`: datasets.<name> or evaluation_datasets.<name>): ann_path,
    unless `build_info.url` gives it, and storage (a shard pattern there, {00000..00099} or *, is always
    a local path)."""
    settings = [FileSetting(f"{prefix}.build_info.storage")]
    return settings if _urls(config, prefix) else [FileSetting(f"{prefix}.build_info.ann_path"), *settings]


def resolve_file_settings(config: DictConfig, sources: list[tuple[str, DictConfig]], *, for_training: bool,
                          evaluation_names: Sequence[str] | None = None, fetch: bool = True) -> None:
    """Replace, in place, every URL or hub name among the model's files (and, `for_training`, the data
    sets' files; with `evaluation_names`, those evaluation sections' files) by the local path it resolves
    to. `fetch=False`: only what the caches hold. Raises ConfigError naming the file and the key."""
    prefixes = [f"datasets.{name}" for name in config.datasets] if for_training else []
    prefixes += [f"evaluation_datasets.{name}" for name in evaluation_names or []]
    settings = model_file_settings(config.model)
    settings += [setting for prefix in prefixes for setting in dataset_file_settings(config, prefix)]

    def fail(key: str, error: FetchError) -> None:
        raise ConfigError(source_of(sources, key), key, error.problem)

    remote = []
    for setting in settings:
        value = OmegaConf.select(config, setting.key, default=None)
        if not value:
            continue
        try:
            source = parse_source(value, setting.want)
        except FetchError as error:
            fail(setting.key, error)
        if source.kind != "path":
            remote.append((setting, value))
    if not remote and not any(_urls(config, prefix) for prefix in prefixes):
        return  # nothing to fetch: validation names any missing path as it always has
    _check_local_paths(config, settings, fail)
    for setting, value in remote:
        try:
            path = resolve_source(value, setting.key, want=setting.want, allow_patterns=setting.patterns,
                                  weight_prefixes=setting.prefixes, fetch=fetch)
        except FetchError as error:
            fail(setting.key, error)
        OmegaConf.update(config, setting.key, str(path))
    for prefix in prefixes:
        _fetch_annotation_urls(config, prefix, fail, fetch)


def _check_local_paths(config: DictConfig, settings: list[FileSetting], fail) -> None:
    """Before anything is downloaded: every local path the settings name is there."""
    for setting in settings:
        value = OmegaConf.select(config, setting.key, default=None)
        if not value or any(char in value for char in SHARD_PATTERN_CHARS):
            continue  # (validation expands shard patterns)
        if parse_source(value, setting.want).kind == "path" and not resolve_path(value).exists():
            fail(setting.key, FetchError(f"path '{value}' does not exist"))


def _urls(config: DictConfig, prefix: str) -> list[str]:
    """A data set's `build_info.url`: one URL or a list (MiniGPT-4's LAVIS-style configs write lists)."""
    urls = OmegaConf.select(config, f"{prefix}.build_info.url", default=None)
    return [urls] if isinstance(urls, str) else list(urls or [])


def _fetch_annotation_urls(config: DictConfig, prefix: str, fail, fetch: bool) -> None:
    """Each `build_info.url` is fetched into the cache; ann_path becomes the first one's local path (a
    LAVIS list names a split's files together: the others are fetched beside it)."""
    key = f"{prefix}.build_info.url"
    paths = []
    for url in _urls(config, prefix):
        try:
            paths.append(resolve_source(url, key, want="file", fetch=fetch))
        except FetchError as error:
            fail(key, error)
    if paths:
        OmegaConf.update(config, f"{prefix}.build_info.ann_path", str(paths[0]))
