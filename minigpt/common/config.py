"""Load a config: defaults, then the user's YAML, then `--options`, validated before anything is built.

Order of precedence (later wins), each source merged on its own so that an error can name its file:
  1. the model's default YAML for its `model_type` (minigpt/configs/models/),
  2. each dataset builder's default YAML (minigpt/configs/datasets/<name>/default.yaml),
  3. the user's file (`--cfg-path`),
  4. `--options a.b=c ...`.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import os
import re
from pathlib import Path
from typing import Any, Sequence

import braceexpand
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from minigpt.common import registry
from minigpt.common.schema import PART_MODES, PART_NAMES, EvalOptions, ModelConfig, RunConfig

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
REPO_ROOT = PACKAGE_ROOT.parent
TOP_LEVEL_KEYS = ("model", "datasets", "run", "evaluation_datasets")


class ConfigError(ValueError):
    """A config problem, always naming the file (or --options) and the dotted key."""

    def __init__(self, source: str, key: str, problem: str):
        super().__init__(f"{source}: {key}: {problem}")
        self.source, self.key, self.problem = source, key, problem


def resolve_path(path: str) -> Path:
    """Relative paths are tried against the working directory, then the repository root."""
    candidate = Path(os.path.expanduser(path))
    if candidate.is_absolute() or candidate.exists():
        return candidate
    in_repo = REPO_ROOT / candidate
    return in_repo if in_repo.exists() else candidate


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
                for_evaluation: bool = False) -> DictConfig:
    """Read, merge and validate a config. `for_training=False` (demo, eval) skips the `datasets` paths;
    `for_evaluation` builds and checks the `evaluation_datasets` sections (otherwise kept as written)."""
    cfg_path = Path(cfg_path)
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
    _validate(config, sources, for_training)
    if for_evaluation:
        _validate_evaluation(config, sources)
    return config


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
        raise ConfigError(_source_of(sources, "model.arch"), "model.arch", str(error.args[0])) from None
    model_type = pick("model_type") or model_class.default_model_type
    defaults = model_class.default_configs
    if model_type not in defaults:
        raise ConfigError(_source_of(sources, "model.model_type"), "model.model_type",
                          f"unknown model_type '{model_type}' for arch '{arch}'; known: {', '.join(defaults)}")
    model = OmegaConf.structured(ModelConfig)
    default_path = PACKAGE_ROOT / defaults[model_type]
    model = _merge(model, _section(_load_yaml(default_path), "model"), str(default_path), "model")
    for source, config in sources:
        model = _merge(model, _section(config, "model"), source, "model")
    model.model_type = model_type
    for part in model.parts:
        if part not in PART_NAMES:
            raise ConfigError(_source_of(sources, f"model.parts.{part}"), f"model.parts.{part}",
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
        raise ConfigError(_source_of(sources, f"{top}.{name}"), f"{top}.{name}", str(error.args[0])) from None
    config_class = builder.config_class if top == "datasets" else _eval_config_class(builder.config_class)
    section = OmegaConf.structured(config_class)
    # The builder's own YAML, or for an alias (llava_detail, refcocop, ...) that of its first name.
    for default_name in (builder_name, *registry.names_of("builder", builder)):
        default_path = PACKAGE_ROOT / "configs" / "datasets" / default_name / "default.yaml"
        if default_path.exists():
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


def _source_of(sources: list[tuple[str, DictConfig]], dotted_key: str) -> str:
    """The last file that set `dotted_key` (the one whose value is in force)."""
    for source, config in reversed(sources):
        if OmegaConf.select(config, dotted_key, default=None) is not None:
            return source
    return "defaults"


def shard_paths(pattern: str) -> list[str]:
    """Expand a webdataset brace pattern (`/data/{00000..00099}.tar`) or a glob into files."""
    paths: list[str] = []
    for expanded in braceexpand.braceexpand(pattern):
        matches = sorted(glob.glob(expanded)) if any(c in expanded for c in "*?[") else [expanded]
        paths.extend(matches)
    return paths


def _validate(config: DictConfig, sources: list[tuple[str, DictConfig]], for_training: bool) -> None:
    model, run = config.model, config.run

    def fail(key: str, problem: str) -> None:
        raise ConfigError(_source_of(sources, key), key, problem)

    def check_path(key: str, value: str | None) -> None:
        if value and not resolve_path(value).exists():
            fail(key, f"path '{value}' does not exist")

    for part, part_config in model.parts.items():
        if part_config.mode not in PART_MODES:
            fail(f"model.parts.{part}.mode", f"'{part_config.mode}' is not one of {', '.join(PART_MODES)}")
    if model.parts.llm.mode == "lora" and model.lora_r <= 0:
        fail("model.lora_r", "parts.llm.mode is 'lora' but lora_r is 0")
    if model.low_resource_bits not in (4, 8):
        fail("model.low_resource_bits", f"{model.low_resource_bits} is not 8 (LLM.int8) or 4 (NF4)")
    if model.feature_cache_gb < 0 or (model.feature_cache_gb > 0 and model.parts.vision_encoder.mode != "frozen"):
        fail("model.feature_cache_gb", f"{model.feature_cache_gb}: a size in GiB (> 0 turns the cache on), and only a "
                                       "frozen vision encoder (parts.vision_encoder.mode: frozen) has features to cache")
    if model.attn_implementation not in ("sdpa", "flash_attention_2", "eager"):
        fail("model.attn_implementation", f"'{model.attn_implementation}' is not one of sdpa, flash_attention_2, eager")
    if model.vit_precision not in ("fp16", "fp32", "bf16"):
        fail("model.vit_precision", f"'{model.vit_precision}' is not one of fp16, fp32, bf16")
    if not model.llama_model and not model.llama_config:
        fail("model.llama_model", "set llama_model (a Hugging Face folder) or llama_config (random weights)")
    if model.llama_config and not (model.tokenizer or model.llama_model):
        fail("model.tokenizer", "an inline llama_config needs a tokenizer folder")
    for key in ("llama_model", "tokenizer", "ckpt", "prompt_path", "vit_weights", "q_former_model"):
        if model[key] and "://" in model[key]:
            fail(f"model.{key}", f"'{model[key]}' is a URL; nothing is downloaded: fetch the file and give its local path")
        check_path(f"model.{key}", model[key])

    _validate_adapters(model, fail)

    if run.lr_sched not in registry.names("lr_scheduler"):
        fail("run.lr_sched", f"unknown schedule '{run.lr_sched}'; known: {', '.join(registry.names('lr_scheduler'))}")
    if run.runner not in registry.names("runner"):
        fail("run.runner", f"unknown runner '{run.runner}'; known: {', '.join(registry.names('runner'))}")
    if run.amp_dtype not in ("bfloat16", "float16"):
        fail("run.amp_dtype", f"'{run.amp_dtype}' is not bfloat16 or float16")
    for key in ("accum_grad_iters", "max_epoch", "log_freq"):
        if run[key] < 1:
            fail(f"run.{key}", f"must be >= 1, got {run[key]}")
    if run.resume_ckpt_path and run.resume_ckpt_path != "latest":
        check_path("run.resume_ckpt_path", run.resume_ckpt_path)

    if not for_training:
        return
    if not config.datasets:
        raise ConfigError(sources[0][0], "datasets", "no dataset to train on")
    for name, dataset in config.datasets.items():
        key = f"datasets.{name}"
        if dataset.batch_size is None and run.batch_size_train is None:
            fail(f"{key}.batch_size", "no batch size (set it here or run.batch_size_train)")
        if dataset.sample_ratio <= 0:
            fail(f"{key}.sample_ratio", f"must be > 0, got {dataset.sample_ratio}")
        info = dataset.build_info
        if info.storage:
            paths = shard_paths(info.storage) if ".tar" in info.storage else [info.storage]
            missing = [p for p in paths if not resolve_path(p).exists()]
            if missing or not paths:
                fail(f"{key}.build_info.storage", f"path '{missing[0] if missing else info.storage}' does not exist")
        if dataset.data_type == "images" and not dataset.vis_processor:
            fail(f"{key}.vis_processor", "missing: set vis_processor.train (name, image_size)")
        if dataset.adapter is not None and dataset.adapter not in model.adapters:
            fail(f"{key}.adapter", f"no adapter '{dataset.adapter}' in model.adapters "
                                   f"(known: {', '.join(model.adapters) or 'none'})")
        if model.adapters and dataset.adapter is None and all(p.mode == "frozen" for p in model.parts.values()):
            fail(f"{key}.adapter", "every part is frozen, so this data set must name the adapter it trains")
        check_path(f"{key}.build_info.ann_path", info.ann_path)
        check_path(f"{key}.build_info.image_path", info.image_path)
        for kind in ("vis_processor", "text_processor"):
            for split, processor in dataset[kind].items():
                _check_processor(processor, f"{key}.{kind}.{split}", fail)
    if run.deepspeed_config:
        _validate_deepspeed(config, fail)


def _validate_evaluation(config: DictConfig, sources: list[tuple[str, DictConfig]]) -> None:
    from minigpt.datasets.builders.base import AnnotationBuilder
    from minigpt.evaluation.metrics import METRICS

    def fail(key: str, problem: str) -> None:
        raise ConfigError(_source_of(sources, key), key, problem)

    if not config.evaluation_datasets:
        fail("evaluation_datasets", "no data set to evaluate")
    for name, section in config.evaluation_datasets.items():
        key = f"evaluation_datasets.{name}"
        if not issubclass(registry.get("builder", section.builder), AnnotationBuilder):
            fail(f"{key}.builder", f"'{section.builder}' reads webdataset shards, which eval.py does not evaluate")
        if section.metric is not None and section.metric not in METRICS:
            fail(f"{key}.metric", f"'{section.metric}' is not one of {', '.join(METRICS)}")
        for option in ("max_new_tokens", "num_beams", "batch_size"):
            if section[option] is not None and section[option] < 1:
                fail(f"{key}.{option}", f"must be >= 1, got {section[option]}")
        for path_key, alias in (("ann_path", "eval_file_path"), ("image_path", "img_path")):
            named = f"{key}.{alias}" if section[alias] else f"{key}.build_info.{path_key}"
            value = section.build_info[path_key]
            if not value:
                fail(named, "missing")
            if not resolve_path(value).exists():
                fail(named, f"path '{value}' does not exist")
        for split, processor in section.vis_processor.items():
            _check_processor(processor, f"{key}.vis_processor.{split}", fail)


def _validate_deepspeed(config: DictConfig, fail) -> None:
    import importlib.util

    from minigpt.runners.engines import deepspeed_settings  # the runners import this module

    if importlib.util.find_spec("deepspeed") is None:
        fail("run.deepspeed_config", "needs DeepSpeed, which is not installed: pip install 'minigpt[gpu]'")
    run = config.run
    micro_batch = next(iter(config.datasets.values())).batch_size or run.batch_size_train  # as the recipe takes it
    try:
        deepspeed_settings(run, micro_batch, run.device.startswith("cuda") and torch.cuda.is_available())
    except (ValueError, OSError) as error:
        fail("run.deepspeed_config", str(error))


def _validate_adapters(model: DictConfig, fail) -> None:
    from minigpt.models.vision_encoder import PRESETS  # models import this module

    if model.adapter not in ("auto", "none", *model.adapters):
        fail("model.adapter", f"'{model.adapter}' is not auto, none or an adapter name "
                              f"(known: {', '.join(model.adapters) or 'none'})")
    if not model.adapters:
        return
    if model.parts.llm.mode == "lora":
        fail("model.lora_r", "task adapters (model.adapters) replace the single LLM LoRA: set lora_r: 0 "
                             "and parts.llm.mode to frozen or full")
    depth = {**PRESETS[model.vit_model], **model.vit_config}["depth"] if model.vit_model in PRESETS else None
    owner: dict[str, str] = {}
    for name, adapter in model.adapters.items():
        key = f"model.adapters.{name}"
        if not re.fullmatch(r"[A-Za-z_]\w*", str(name)):
            fail(key, "an adapter name must be a Python identifier (letters, digits, _)")
        if adapter.r <= 0:
            fail(f"{key}.r", f"must be > 0, got {adapter.r}")
        if depth is not None and not 0 <= adapter.vision_blocks <= depth:
            fail(f"{key}.vision_blocks", f"must be between 0 and the encoder's {depth} blocks, got {adapter.vision_blocks}")
        if not (adapter.vision_blocks and adapter.vision_target_modules) and not adapter.projector \
                and not adapter.llm_target_modules:
            fail(key, "adapts nothing: set vision_blocks, projector or llm_target_modules")
        for task in adapter.tasks:
            if task in owner:
                fail(f"{key}.tasks", f"task '{task}' already selects adapter '{owner[task]}'")
            owner[task] = name


def _check_processor(processor: DictConfig, key: str, fail) -> None:
    import inspect

    if "name" not in processor:
        fail(f"{key}.name", "missing processor name")
    try:
        processor_class = registry.get("processor", processor.name)
    except KeyError as error:
        fail(f"{key}.name", str(error.args[0]))
    accepted = inspect.signature(processor_class.__init__).parameters
    for option in processor:
        if option != "name" and option not in accepted:
            fail(f"{key}.{option}", f"unknown option for processor '{processor.name}'")


def save_config(config: DictConfig, path: str | Path) -> None:
    OmegaConf.save(config, path, resolve=True)
