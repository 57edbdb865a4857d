"""Load a config: defaults, then the user's YAML, then `--options`, validated before anything is built
(the checks are in validation/). Importing this module registers every model, data set builder,
processor and schedule, so that a config may name any of them.

Order of precedence (later wins), each source merged on its own so that an error can name its file:
  1. the model's default YAML for its `model_type` (minigpt/defaults/models/),
  2. each dataset builder's default YAML (minigpt/defaults/datasets/<name>/default.yaml),
  3. the user's file (`--cfg-path`),
  4. `--options a.b=c ...`.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import minigpt.datasets.builders  # noqa: F401  (the plugin packages fill the registry as they are imported)
import minigpt.models  # noqa: F401
import minigpt.processors  # noqa: F401
import minigpt.runners  # noqa: F401
from minigpt.common import registry
from minigpt.common.errors import ConfigError
from minigpt.common.paths import PACKAGE_ROOT, resolve_path
from minigpt.common.schema import IGNORED_KEYS, PART_NAMES, EvalOptions, ModelConfig, RunConfig
from minigpt.config import validation
from minigpt.config.defaults import dataset_defaults, model_defaults
from minigpt.config.vision import drop_eva_defaults, fill_tower_normalisation
from minigpt.config.sources import resolve_file_settings
from minigpt.config.validation import source_of

TOP_LEVEL_KEYS = ("model", "datasets", "run", "evaluation_datasets")
SHIPPED_FOLDERS = ("train_configs", "eval_configs")  # in the package: configs addressable by name


def shipped_configs() -> dict[str, Path]:
    """Name -> file of every config shipped with the package (`minigpt configs` lists them)."""
    return {path.stem: path for folder in SHIPPED_FOLDERS for path in sorted((PACKAGE_ROOT / folder).glob("*.yaml"))}


def find_config(name_or_path: str | Path) -> Path:
    """A config file by path (relative paths also from the checkout or the package), or a shipped config
    by name (`tiny_stage1`, `tiny_stage1.yaml`)."""
    path = resolve_path(name_or_path)
    if path.is_file():
        return path
    shipped = shipped_configs()
    name = Path(name_or_path).name.removesuffix(".yaml")
    if name in shipped and Path(name_or_path).parent in (Path("."), *map(Path, SHIPPED_FOLDERS)):
        return shipped[name]
    raise ConfigError(str(name_or_path), "-", "file not found, and not the name of a shipped config "
                                              "(`minigpt configs` lists them)")


def parse_options(options: Sequence[str] | None) -> DictConfig:
    """`--options a.b=1 c.d=x` (or MiniGPT-4's `a.b 1 c.d x` pairs) -> a nested DictConfig."""
    options = list(options or [])
    if options and all("=" not in o for o in options):
        if len(options) % 2:
            raise ConfigError("--options", " ".join(options), "expected key=value pairs")
        options = [f"{k}={v}" for k, v in zip(options[::2], options[1::2])]
    bad = [o for o in options if "=" not in o]
    if bad:
        raise ConfigError("--options", bad[0], "expected key=value")
    return OmegaConf.from_dotlist(options)


def _merge(base: DictConfig, update: Any, source: str, prefix: str) -> DictConfig:
    if update is None:
        return base
    try:
        return OmegaConf.merge(base, update)
    except OmegaConfBaseException as error:
        key = f"{prefix}.{error.full_key}" if error.full_key else prefix
        message = (getattr(error, "msg", None) or str(error)).splitlines()[0]
        if type(error).__name__ == "ConfigKeyError":
            message = f"unknown key ({message})"
        raise ConfigError(source, key, message) from None


def _load_yaml(path: Path) -> DictConfig:
    try:
        config = OmegaConf.load(path)
    except FileNotFoundError:
        raise ConfigError(str(path), "-", "file not found") from None
    except Exception as error:  # yaml syntax errors carry line numbers in their text
        raise ConfigError(str(path), "-", f"cannot parse YAML: {error}") from None
    return config if config is not None else OmegaConf.create({})


def _section(config: DictConfig, key: str) -> Any:
    return config.get(key) if key in config else None


def load_config(cfg_path: str | Path, options: Sequence[str] | None = None, *, for_training: bool = True,
                for_evaluation: bool = False, evaluation_names: Sequence[str] | None = None,
                for_planning: bool = False) -> DictConfig:
    """Read, merge and validate a config. `for_training=False` (demo, eval) skips the `datasets` paths;
    `for_evaluation` builds the `evaluation_datasets` sections (otherwise kept as written) and checks
    those named in `evaluation_names` (all by default): eval.py --datasets needs only its own files.
    `for_planning` (minigpt plan, --plan): the values are checked, but no file the config names (weights,
    data, the output folder) need exist, and none is opened or fetched."""
    cfg_path = find_config(cfg_path)
    user = _load_yaml(cfg_path)
    overrides = parse_options(options)
    sources = [(str(cfg_path), user), ("--options", overrides)]
    for source, config in sources:
        for key in config:
            if key not in TOP_LEVEL_KEYS:
                raise ConfigError(source, str(key), f"unknown top-level section (allowed: {', '.join(TOP_LEVEL_KEYS)})")

    model = _build_model_section(sources)
    datasets = OmegaConf.create({})
    names = [n for _, c in sources for n in (_section(c, "datasets") or {})]
    for name in dict.fromkeys(names):
        datasets[name] = _build_dataset_section(str(name), sources)
    run = OmegaConf.structured(RunConfig)
    for source, config in sources:
        run = _merge(run, _section(config, "run"), source, "run")
    evaluation = OmegaConf.create({})
    if for_evaluation:
        names = [n for _, c in sources for n in (_section(c, "evaluation_datasets") or {})]
        for name in dict.fromkeys(names):
            evaluation[name] = _build_dataset_section(str(name), sources, "evaluation_datasets")
    else:
        for source, config in sources:
            evaluation = _merge(evaluation, _section(config, "evaluation_datasets"), source, "evaluation_datasets")

    config = OmegaConf.create({"model": model, "datasets": datasets, "run": run, "evaluation_datasets": evaluation})
    config = OmegaConf.merge(config, {})  # detach from sources
    _apply_legacy_switches(config.model)
    if not for_planning:  # URLs and hub names -> local paths, fetched now (a plan opens and fetches nothing)
        evaluated = (evaluation_names or list(config.evaluation_datasets)) if for_evaluation else None
        resolve_file_settings(config, sources, for_training=for_training, evaluation_names=evaluated)
    # Checkpoints are read long after the config: found now, as validation finds them, from any working directory.
    for section, key in (("model", "ckpt"), ("run", "resume_ckpt_path")):
        found = resolve_path(config[section][key]) if config[section][key] not in (None, "", "latest") else None
        if found is not None and found.exists():  # (a missing one stays as written, for validation to name)
            config[section][key] = str(found.absolute())
    report_ignored_keys(sources)
    validation.validate(config, sources, for_training, for_planning)
    if for_evaluation:
        validation.validate_evaluation(config, sources, evaluation_names)
    fill_tower_normalisation(config)
    return config


def model_section(cfg_path: str | Path, options: Sequence[str] | None = None) -> DictConfig:
    """A config's `model` section over its architecture's defaults, not validated: its prompts and token
    budget without needing its weights files."""
    path = find_config(cfg_path)
    return _build_model_section([(str(path), _load_yaml(path)), ("--options", parse_options(options))])


def report_ignored_keys(sources: list[tuple[str, DictConfig]]) -> list[str]:
    """Tell (once, on the first rank) which of MiniGPT-4's settings a config sets that do nothing here."""
    found = [key for key in IGNORED_KEYS if any(OmegaConf.select(c, key, default=None) is not None for _, c in sources)]
    if found and os.environ.get("RANK", "0") == "0":
        print(f"{sources[0][0]}: ignored, as they change nothing here: "
              + "; ".join(f"{key} ({IGNORED_KEYS[key]})" for key in found), file=sys.stderr)
    return found


def _build_model_section(sources: list[tuple[str, DictConfig]]) -> DictConfig:
    def pick(key: str) -> Any:
        value = None
        for _, config in sources:
            section = _section(config, "model") or {}
            value = section.get(key, value)
        return value

    arch = pick("arch") or "minigpt4"
    try:
        model_class = registry.get("model", arch)
    except KeyError as error:
        raise ConfigError(source_of(sources, "model.arch"), "model.arch", str(error.args[0])) from None
    model_type = pick("model_type") or model_class.default_model_type
    defaults = model_class.default_configs
    if model_type not in defaults:
        raise ConfigError(source_of(sources, "model.model_type"), "model.model_type",
                          f"unknown model_type '{model_type}' for arch '{arch}'; known: {', '.join(defaults)}")
    model = OmegaConf.structured(ModelConfig)
    default_path = model_defaults(defaults[model_type])
    model = _merge(model, _section(_load_yaml(default_path), "model"), str(default_path), "model")
    for source, config in sources:
        model = _merge(model, _section(config, "model"), source, "model")
    model.model_type = model_type
    drop_eva_defaults(model, sources)
    for part in model.parts:
        if part not in PART_NAMES:
            raise ConfigError(source_of(sources, f"model.parts.{part}"), f"model.parts.{part}",
                              f"unknown part (allowed: {', '.join(PART_NAMES)})")
    return model


@functools.cache
def _eval_config_class(config_class: type) -> type:
    """A builder's config dataclass with eval.py's options added."""
    return dataclasses.make_dataclass(f"Eval{config_class.__name__}", [], bases=(EvalOptions, config_class))


def _build_dataset_section(name: str, sources: list[tuple[str, DictConfig]], top: str = "datasets") -> DictConfig:
    """A section's builder is `builder:` if set, else its own name (so two files of one format can be
    mixed under two names); the builder's default YAML comes first. `top` is datasets or evaluation_datasets."""
    builder_name = name
    for _, config in sources:
        builder_name = ((_section(config, top) or {}).get(name) or {}).get("builder") or builder_name
    try:
        builder = registry.get("builder", builder_name)
    except KeyError as error:
        raise ConfigError(source_of(sources, f"{top}.{name}"), f"{top}.{name}", str(error.args[0])) from None
    config_class = builder.config_class if top == "datasets" else _eval_config_class(builder.config_class)
    section = OmegaConf.structured(config_class)
    # The builder's own YAML, or for an alias (llava_detail, refcocop, ...) that of its first name.
    for default_name in (builder_name, *registry.names_of("builder", builder)):
        default_path = dataset_defaults(default_name)
        if default_path is not None:
            defaults = _section(_load_yaml(default_path), "datasets") or {}
            section = _merge(section, defaults.get(default_name), str(default_path), f"{top}.{name}")
            break
    for source, config in sources:
        user_section = (_section(config, top) or {}).get(name)
        section = _merge(section, user_section, source, f"{top}.{name}")
    section.builder = builder_name
    if top == "evaluation_datasets":
        section.build_info.ann_path = section.eval_file_path or section.build_info.ann_path
        section.build_info.image_path = section.img_path or section.build_info.image_path
    return section


def _apply_legacy_switches(model: DictConfig) -> None:
    """MiniGPT-4's freeze_vit / freeze_qformer / lora_r map onto the per-part modes."""
    for part in PART_NAMES:
        model.parts.setdefault(part, {"mode": "frozen", "lr_mult": 1.0})
    if model.freeze_vit is not None:
        model.parts.vision_encoder.mode = "frozen" if model.freeze_vit else "full"
    if model.freeze_qformer is not None:
        model.parts.qformer.mode = "frozen" if model.freeze_qformer else "full"
    if model.lora_r > 0 and model.parts.llm.mode == "frozen":
        model.parts.llm.mode = "lora"
