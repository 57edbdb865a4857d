"""Config checks, run by load_config before any model is built: each failure names the file (or
--options) that set the value and the dotted key, and says what would be right."""
from __future__ import annotations

import importlib.util
import inspect
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from omegaconf import DictConfig, OmegaConf

from minigpt.paragraph.facts import STAGES
from minigpt.common import registry
from minigpt.common.errors import ConfigError, InputError, install_hint
from minigpt.common.paths import resolve_model_folder, resolve_path, shard_paths
from minigpt.common.schema import PART_MODES
from minigpt.inference.chat import CHOICE_SCORINGS
from minigpt.conversation.chat_styles import CHAT_PROMPTS
from minigpt.datasets.builders.base import AnnotationBuilder
from minigpt.datasets.builders.caption_builders import CaptionShardBuilder
from minigpt.datasets.builders.messages_builder import dataset_info_entry
from minigpt.evaluation.metrics import METRICS
from minigpt.models.image_tokens import image_token_count, input_image_size
from minigpt.models.peft_folders import check_adapter_config, check_task_adapter_folder
from minigpt.models.vision_encoder import PRESETS
from minigpt.runners.deepspeed_config import deepspeed_settings
from minigpt.runners.engines import deepspeed_micro_batch

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")


def source_of(sources: list[tuple[str, DictConfig]], dotted_key: str) -> str:
    """The last file that set `dotted_key` (the one whose value is in force)."""
    for source, config in reversed(sources):
        if OmegaConf.select(config, dotted_key, default=None) is not None:
            return source
    return "defaults"


def validate(config: DictConfig, sources: list[tuple[str, DictConfig]], for_training: bool,
             for_planning: bool = False) -> None:
    """The model and run sections, and with `for_training` every data set and the output folder; raises
    ConfigError naming the file that set the offending key. `for_planning` (minigpt plan): the values
    only; no file, folder or optional package the config names need be there, and none is opened."""

    def fail(key: str, problem: str) -> None:
        raise ConfigError(source_of(sources, key), key, problem)

    def check_path(key: str, value: str | None) -> None:
        if value and not for_planning and not resolve_path(value).exists():
            fail(key, f"path '{value}' does not exist")

    _validate_model(config.model, fail, check_path, for_planning)
    _validate_adapters(config.model, fail)
    _validate_mixing(config.model, fail, check_path)
    _validate_run(config.run, fail, check_path, for_planning)
    if not for_training:
        _validate_inference_transform(config, fail)
        return
    if not config.datasets:
        raise ConfigError(sources[0][0], "datasets", "no dataset to train on")
    for name, dataset in config.datasets.items():
        _validate_dataset(f"datasets.{name}", dataset, config, fail, check_path, for_planning)
    if config.model.low_resource and config.model.parts.llm.mode == "full":
        fail("model.low_resource", "a quantised LLM does not train fully: set model.parts.llm.mode to lora "
                                   "(QLoRA) or frozen")
    if config.model.low_resource and config.run.deepspeed_config:
        fail("model.low_resource", "a quantised LLM trains under DDP (torchrun), not under DeepSpeed")
    if config.run.deepspeed_config:
        _validate_deepspeed(config, fail, for_planning)
    if not for_planning:
        _validate_output_dir(config.run, fail)


def _validate_model(model: DictConfig, fail, check_path, for_planning: bool = False) -> None:
    for part, part_config in model.parts.items():
        if part_config.mode not in PART_MODES:
            fail(f"model.parts.{part}.mode", f"'{part_config.mode}' is not one of {', '.join(PART_MODES)}")
    if model.logits_chunk_size is not None and model.logits_chunk_size < 1:
        fail("model.logits_chunk_size", f"{model.logits_chunk_size} rows: at least 1")
    if model.parts.llm.mode == "lora" and model.lora_r <= 0:
        fail("model.lora_r", "parts.llm.mode is 'lora' but lora_r is 0")
    if model.llm_adapter:
        if model.parts.llm.mode != "lora":
            fail("model.llm_adapter", "a peft adapter goes into the LLM's LoRA: set parts.llm.mode: lora")
        try:
            if not for_planning:  # (its adapter_config.json is a file)
                check_adapter_config(model.llm_adapter, model)
        except InputError as error:
            fail("model.llm_adapter", str(error))
    for name, adapter in model.adapters.items():
        if adapter.peft_folder and not for_planning:
            try:
                check_task_adapter_folder(adapter.peft_folder, name, adapter)
            except InputError as error:
                fail(f"model.adapters.{name}.peft_folder", str(error))
    if model.chat_prompt not in CHAT_PROMPTS:
        fail("model.chat_prompt", f"'{model.chat_prompt}' is not one of {', '.join(CHAT_PROMPTS)}")
    if model.low_resource_bits not in (4, 8):
        fail("model.low_resource_bits", f"{model.low_resource_bits} is not 8 (LLM.int8) or 4 (NF4)")
    vision_frozen = model.parts.vision_encoder.mode == "frozen" and all(e.mode == "frozen" for e in model.extra_encoders)
    if model.feature_cache_gb < 0 or (model.feature_cache_gb > 0 and not vision_frozen):
        fail("model.feature_cache_gb", f"{model.feature_cache_gb}: a size in GiB (> 0 turns the cache on), and only "
                                       "frozen vision encoders (parts.vision_encoder.mode and every extra_encoders "
                                       "mode: frozen) have features to cache")
    in_vision = [name for name, adapter in model.adapters.items() if adapter.vision_blocks > 0]
    if model.feature_cache_gb > 0 and in_vision:  # the features would depend on which adapter is active
        fail("model.feature_cache_gb", f"adapter '{in_vision[0]}' puts LoRA in the vision encoder (vision_blocks: "
                                       f"{model.adapters[in_vision[0]].vision_blocks}), so its features cannot be cached; "
                                       "set feature_cache_gb: 0 or vision_blocks: 0")
    if model.attn_implementation not in ("sdpa", "flash_attention_2", "eager"):
        fail("model.attn_implementation", f"'{model.attn_implementation}' is not one of sdpa, flash_attention_2, eager")
    if model.vit_precision not in ("fp16", "fp32", "bf16"):
        fail("model.vit_precision", f"'{model.vit_precision}' is not one of fp16, fp32, bf16")
    if not model.llama_model and not model.llama_config:
        fail("model.llama_model", "set llama_model (a Hugging Face folder) or llama_config (random weights)")
    if model.llama_config and not (model.tokenizer or model.llama_model):
        fail("model.tokenizer", "an inline llama_config needs a tokenizer folder")
    for key in ("llama_model", "tokenizer", "ckpt", "prompt_path", "vit_weights", "q_former_model"):
        if key in ("llama_model", "tokenizer") and model[key] and not for_planning \
                and not resolve_model_folder(model[key]).exists():
            fail(f"model.{key}", f"path '{model[key]}' does not exist, and the Hugging Face cache does not hold it")
        check_path(f"model.{key}", None if key in ("llama_model", "tokenizer") else model[key])
    if not for_planning:
        _check_llm_folders(model, fail)


def _check_llm_folders(model: DictConfig, fail) -> None:
    """The LLM folder holds a config.json and the tokenizer folder tokenizer files (found now, not after
    the vision side is built)."""
    if model.llama_model and not (resolve_model_folder(model.llama_model) / "config.json").is_file():
        fail("model.llama_model", f"'{model.llama_model}' has no config.json (a Hugging Face model folder is expected)")
    key = "model.tokenizer" if model.tokenizer else "model.llama_model"
    folder = model.tokenizer or model.llama_model
    if folder and not any((resolve_model_folder(folder) / name).is_file() for name in TOKENIZER_FILES):
        fail(key, f"'{folder}' holds no tokenizer ({' or '.join(TOKENIZER_FILES)})")


def _validate_run(run: DictConfig, fail, check_path, for_planning: bool = False) -> None:
    if run.lr_sched not in registry.names("lr_scheduler"):
        fail("run.lr_sched", f"unknown schedule '{run.lr_sched}'; known: {', '.join(registry.names('lr_scheduler'))}")
    if run.runner not in registry.names("runner"):
        fail("run.runner", f"unknown runner '{run.runner}'; known: {', '.join(registry.names('runner'))}")
    if run.amp_dtype not in ("bfloat16", "float16"):
        fail("run.amp_dtype", f"'{run.amp_dtype}' is not bfloat16 or float16")
    for key in ("accum_grad_iters", "max_epoch", "log_freq", "iters_per_epoch", "ckpt_freq", "keep_last",
                "batch_size_train", "batch_size_eval", "max_grad_norm", "packing_length"):
        if run[key] is not None and run[key] <= 0:  # (a negative clipping norm would flip every gradient)
            fail(f"run.{key}", f"must be > 0, got {run[key]}")
    for key in ("warmup_steps", "num_workers", "weight_decay", "init_lr", "min_lr", "warmup_lr"):
        if run[key] < 0:
            fail(f"run.{key}", f"must be >= 0, got {run[key]}")
    if not 0 <= run.beta2 < 1:
        fail("run.beta2", f"must be in [0, 1), got {run.beta2}")
    if run.resume_ckpt_path and run.resume_ckpt_path != "latest":
        check_path("run.resume_ckpt_path", run.resume_ckpt_path)
    if for_planning:  # the optional packages below are needed by the run, not by its plan
        return
    if run.wandb_log and importlib.util.find_spec("wandb") is None:
        fail("run.wandb_log", install_hint("wandb", "wandb"))
    if run.tensorboard_log and importlib.util.find_spec("tensorboard") is None:
        fail("run.tensorboard_log", install_hint("tensorboard", "tensorboard"))


def _validate_inference_transform(config: DictConfig, fail) -> None:
    """The image transform chat and serve take (the first data set's) must give the model's input size."""
    for name, dataset in config.datasets.items():
        split = "eval" if "eval" in dataset.vis_processor else "train"
        if split in dataset.vis_processor:
            _check_input_size(dataset.vis_processor[split], f"datasets.{name}.vis_processor.{split}", config.model, fail)
            return


def _validate_dataset(key: str, dataset: DictConfig, config: DictConfig, fail, check_path,
                      for_planning: bool = False) -> None:
    model, run = config.model, config.run
    if dataset.batch_size is not None and dataset.batch_size < 1:
        fail(f"{key}.batch_size", f"must be > 0, got {dataset.batch_size}")
    if dataset.batch_size is None and run.batch_size_train is None:
        fail(f"{key}.batch_size", "no batch size (set it here or run.batch_size_train)")
    if dataset.sample_ratio <= 0:
        fail(f"{key}.sample_ratio", f"must be > 0, got {dataset.sample_ratio}")
    info = dataset.build_info
    if info.storage and not for_planning:
        paths = shard_paths(info.storage) if ".tar" in info.storage else [info.storage]
        missing = [p for p in paths if not resolve_path(p).exists()]
        if missing or not paths:
            fail(f"{key}.build_info.storage", f"path '{missing[0] if missing else info.storage}' does not exist")
        if issubclass(registry.get("builder", dataset.builder), CaptionShardBuilder) and resolve_path(info.storage).is_dir():
            fail(f"{key}.build_info.storage", f"'{info.storage}' is a folder; name its webdataset shards, e.g. "
                                              f"'{info.storage.rstrip('/')}/{{00000..00099}}.tar' or '{info.storage.rstrip('/')}/*.tar'")
    if dataset.data_type == "images" and not dataset.vis_processor:
        fail(f"{key}.vis_processor", "missing: set vis_processor.train (name, image_size)")
    if dataset.adapter is not None and dataset.adapter not in model.adapters:
        fail(f"{key}.adapter", f"no adapter '{dataset.adapter}' in model.adapters "
                               f"(known: {', '.join(model.adapters) or 'none'})")
    if model.adapters and dataset.adapter is None and all(p.mode == "frozen" for p in model.parts.values()):
        fail(f"{key}.adapter", "every part is frozen, so this data set must name the adapter it trains")
    check_path(f"{key}.build_info.ann_path", info.ann_path)
    check_path(f"{key}.build_info.image_path", info.image_path)
    if "dataset_info" in dataset and not for_planning:
        _check_messages_source(dataset, key, fail, check_path)
    for kind in ("vis_processor", "text_processor"):
        for split, processor in dataset[kind].items():
            _check_processor(processor, f"{key}.{kind}.{split}", fail)
            if kind == "vis_processor":
                _check_input_size(processor, f"{key}.{kind}.{split}", model, fail)


def _check_messages_source(dataset: DictConfig, key: str, fail, check_path) -> None:
    """A messages data set reads build_info.ann_path, or an entry of a LLaMA-Factory dataset_info.json."""
    if dataset.dataset_info is None:
        if dataset.build_info.ann_path is None:
            fail(f"{key}.build_info.ann_path", "missing: name the data file (or dataset_info and dataset)")
        return
    if dataset.dataset is None:
        fail(f"{key}.dataset", f"missing: name the entry of {dataset.dataset_info} to use")
    check_path(f"{key}.dataset_info", dataset.dataset_info)
    try:
        dataset_info_entry(dataset.dataset_info, dataset.dataset)
    except InputError as error:
        fail(f"{key}.dataset_info", str(error))


def _validate_output_dir(run: DictConfig, fail) -> None:
    """Checkpoints and logs must be writable: found now, not after minutes of building a 7B model. A file
    is written and removed where the folder would be made, which no permission bit or mount flag fools."""
    folder = Path(os.path.expanduser(run.output_dir)).absolute()
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists())
    if not existing.is_dir():
        fail("run.output_dir", f"'{run.output_dir}': {existing} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=existing):
            pass
    except OSError as error:
        fail("run.output_dir", f"'{run.output_dir}': {existing} is not writable ({error.strerror})")


def validate_evaluation(config: DictConfig, sources: list[tuple[str, DictConfig]],
                        names: Sequence[str] | None = None) -> None:
    """The named `evaluation_datasets` sections (all by default), as eval.py will read them."""
    def fail(key: str, problem: str) -> None:
        raise ConfigError(source_of(sources, key), key, problem)

    if not config.evaluation_datasets:
        fail("evaluation_datasets", "no data set to evaluate")
    for name in names or []:
        if name not in config.evaluation_datasets:
            fail("evaluation_datasets", f"no section '{name}' (known: {', '.join(config.evaluation_datasets)})")
    for name in names or list(config.evaluation_datasets):
        section = config.evaluation_datasets[name]
        key = f"evaluation_datasets.{name}"
        if not issubclass(registry.get("builder", section.builder), AnnotationBuilder):
            fail(f"{key}.builder", f"'{section.builder}' reads webdataset shards, which eval.py does not evaluate")
        if section.metric is not None and section.metric not in METRICS:
            fail(f"{key}.metric", f"'{section.metric}' is not one of {', '.join(METRICS)}")
        if "variants" in section:
            _check_paragraph_section(section, key, fail)
        if section.choice_scoring not in CHOICE_SCORINGS:
            fail(f"{key}.choice_scoring", f"'{section.choice_scoring}' is not one of {', '.join(CHOICE_SCORINGS)}")
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
            if split == "eval":  # the one eval.py uses
                _check_input_size(processor, f"{key}.vis_processor.{split}", config.model, fail)


def _check_paragraph_section(section: DictConfig, key: str, fail) -> None:
    """A paragraph_gallery section: variants made of known stages, a known writer."""
    for variant, stages in section.variants.items():
        unknown = [stage for stage in stages if stage not in STAGES]
        if not stages or unknown:
            fail(f"{key}.variants.{variant}", f"stages must be some of {', '.join(STAGES)}, got {list(stages)}")
    if section.writer not in ("template", "model"):
        fail(f"{key}.writer", f"'{section.writer}' is not template or model")


def _validate_deepspeed(config: DictConfig, fail, for_planning: bool = False) -> None:
    if importlib.util.find_spec("deepspeed") is None and not for_planning:
        fail("run.deepspeed_config", install_hint("deepspeed", "gpu"))
    run = config.run
    try:
        deepspeed_settings(run, deepspeed_micro_batch(config), run.device.startswith("cuda") and torch.cuda.is_available())
    except (ValueError, OSError) as error:
        fail("run.deepspeed_config", str(error))


def _validate_adapters(model: DictConfig, fail) -> None:
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


def _validate_mixing(model: DictConfig, fail, check_path) -> None:
    """proj_type, extra_encoders and sub_image_grid (SPHINX-style mixing)."""
    if model.proj_type not in ("linear", "mlp"):
        fail("model.proj_type", f"'{model.proj_type}' is not linear or mlp")
    if model.sub_image_grid < 1:
        fail("model.sub_image_grid", f"must be >= 1 (1: no sub-images), got {model.sub_image_grid}")
    for index, extra in enumerate(model.extra_encoders):
        key = f"model.extra_encoders.{index}"
        if not extra.timm_model:
            fail(f"{key}.timm_model", "missing: the timm architecture to build (e.g. vit_large_patch14_dinov2)")
        if not timm.is_model(extra.timm_model):
            fail(f"{key}.timm_model", f"'{extra.timm_model}' is not a timm architecture (timm.list_models() names them)")
        if extra.mode not in ("frozen", "full"):
            fail(f"{key}.mode", f"'{extra.mode}' is not frozen or full")
        for stat in ("mean", "std"):
            if extra[stat] is not None and len(extra[stat]) != 3:
                fail(f"{key}.{stat}", f"needs 3 values (R, G, B), got {len(extra[stat])}")
        check_path(f"{key}.weights", extra.weights)
    if model.sub_image_grid >= 1 and image_token_count(model) >= model.max_context_len:
        grid = f" ({model.sub_image_grid} x {model.sub_image_grid} sub-images)" if model.sub_image_grid > 1 else ""
        fail("model.max_context_len", f"{model.max_context_len}, but one image takes {image_token_count(model)} "
                                      f"tokens{grid}: no room would be left for the prompt's text")
    if model.extra_encoders and model.has_qformer and model.q_former_model:
        fail("model.q_former_model", "BLIP-2's Q-Former cross-attends to the EVA ViT's tokens alone, and with "
                                     "extra_encoders the tokens are wider: leave q_former_model unset (the Q-Former "
                                     "then trains from scratch) or set has_qformer: false")


def _check_input_size(processor: DictConfig, key: str, model: DictConfig, fail) -> None:
    """Images must come at the size the model splits and encodes."""
    expected = input_image_size(model)
    size = processor.get("image_size")
    if size is None:  # the processor's own default
        try:
            processor_class = registry.get("processor", processor.get("name"))
        except KeyError:
            return  # an unknown processor: _check_processor says so where it applies
        parameter = inspect.signature(processor_class.__init__).parameters.get("image_size")
        size = parameter.default if parameter is not None else None
    if size is not None and size != expected:
        how = f"model.image_size {model.image_size} x sub_image_grid {model.sub_image_grid}" \
            if model.sub_image_grid > 1 else "model.image_size"
        fail(f"{key}.image_size", f"{size}, but the model takes {expected}-pixel images ({how})")


def _check_processor(processor: DictConfig, key: str, fail) -> None:
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
