"""Checks of the model section that a single key's allowed values cannot express: keys that constrain
each other (part modes, LoRA, task adapters, the image token budget), names that must be registered, and
the weights and folders it names."""
from __future__ import annotations

import json
import re
from pathlib import Path

import timm
from omegaconf import DictConfig

from minigpt.common.errors import InputError
from minigpt.common.paths import resolve_model_folder
from minigpt.config.validation.checker import Checker
from minigpt.config.validation.vision import check_vision_tower
from minigpt.conversation.chat_styles import CHAT_PROMPTS
from minigpt.models.hf_vision_tower import read_folder
from minigpt.models.image_tokens import image_token_count
from minigpt.models.peft_folders import check_adapter_config, check_task_adapter_folder
from minigpt.models.vision_encoder import PRESETS

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")


def validate_model(model: DictConfig, checker: Checker) -> None:
    """Values first, so that the checks after them may rely on them (sub_image_grid >= 1 for the token
    count); then how the keys fit together; files last, which cost the most to look at."""
    checker.check_allowed_values(model, "model")
    check_vision_tower(model, checker)
    _check_llm_lora(model, checker)
    if model.chat_prompt not in CHAT_PROMPTS:
        checker.fail("model.chat_prompt", f"'{model.chat_prompt}' is not one of {', '.join(CHAT_PROMPTS)}")
    _check_feature_cache(model, checker)
    _check_weights_sources(model, checker)
    _check_adapters(model, checker)
    _check_mixing(model, checker)


def _check_llm_lora(model: DictConfig, checker: Checker) -> None:
    """The LLM's LoRA (lora_r, a peft adapter to start from) and each task adapter's peft folder."""
    if model.parts.llm.mode == "lora" and model.lora_r <= 0:
        checker.fail("model.lora_r", "parts.llm.mode is 'lora' but lora_r is 0")
    if model.llm_adapter:
        if model.parts.llm.mode != "lora":
            checker.fail("model.llm_adapter", "a peft adapter goes into the LLM's LoRA: set parts.llm.mode: lora")
        try:
            if not checker.for_planning:  # (its adapter_config.json is a file)
                check_adapter_config(model.llm_adapter, model)
        except InputError as error:
            checker.fail("model.llm_adapter", str(error))
    for name, adapter in model.adapters.items():
        if adapter.peft_folder and not checker.for_planning:
            try:
                check_task_adapter_folder(adapter.peft_folder, name, adapter)
            except InputError as error:
                checker.fail(f"model.adapters.{name}.peft_folder", str(error))


def _check_feature_cache(model: DictConfig, checker: Checker) -> None:
    """Cached image features are only right while no encoder (nor an adapter's LoRA in it) trains."""
    encoder_modes = [model.parts.vision_encoder.mode, *(extra.mode for extra in model.extra_encoders)]
    vision_frozen = all(mode == "frozen" for mode in encoder_modes)
    if model.feature_cache_gb > 0 and not vision_frozen:
        checker.fail("model.feature_cache_gb", f"{model.feature_cache_gb}: a size in GiB (> 0 turns the cache on), "
                                               "and only frozen vision encoders (parts.vision_encoder.mode and every "
                                               "extra_encoders mode: frozen) have features to cache")
    in_vision = [name for name, adapter in model.adapters.items() if adapter.vision_blocks > 0]
    if model.feature_cache_gb > 0 and in_vision:  # the features would depend on which adapter is active
        checker.fail("model.feature_cache_gb", f"adapter '{in_vision[0]}' puts LoRA in the vision encoder "
                                               f"(vision_blocks: {model.adapters[in_vision[0]].vision_blocks}), so its "
                                               "features cannot be cached; set feature_cache_gb: 0 or vision_blocks: 0")


def _check_weights_sources(model: DictConfig, checker: Checker) -> None:
    """An LLM from a folder or an inline config, a tokenizer for it, and every weights file named."""
    if not model.llama_model and not model.llama_config:
        checker.fail("model.llama_model", "set llama_model (a Hugging Face folder) or llama_config (random weights)")
    if model.llama_config and not (model.tokenizer or model.llama_model):
        checker.fail("model.tokenizer", "an inline llama_config needs a tokenizer folder")
    for key in ("llama_model", "tokenizer"):  # a folder, or a name the Hugging Face cache holds
        if model[key] and not checker.for_planning and not resolve_model_folder(model[key]).exists():
            checker.fail(f"model.{key}", f"path '{model[key]}' does not exist, and the Hugging Face cache does not "
                                         "hold it")
    for key in ("ckpt", "prompt_path", "vit_weights", "q_former_model"):
        checker.check_path(f"model.{key}", model[key])
    if not checker.for_planning:
        _check_llm_folders(model, checker)


def _check_llm_folders(model: DictConfig, checker: Checker) -> None:
    """The LLM folder holds a config.json and the tokenizer folder tokenizer files (found now, not after
    the vision side is built)."""
    if model.llama_model and not (resolve_model_folder(model.llama_model) / "config.json").is_file():
        checker.fail("model.llama_model", f"'{model.llama_model}' has no config.json (a Hugging Face model folder "
                                          "is expected)")
    key = "model.tokenizer" if model.tokenizer else "model.llama_model"
    folder = model.tokenizer or model.llama_model
    if folder and not any((resolve_model_folder(folder) / name).is_file() for name in TOKENIZER_FILES):
        checker.fail(key, f"'{folder}' holds no tokenizer ({' or '.join(TOKENIZER_FILES)})")
    if folder and model.prompt_template == "auto" and not has_chat_template(resolve_model_folder(folder)):
        checker.fail("model.prompt_template", f"'auto' takes the chat template of the tokenizer in '{folder}', which "
                                              "has none; set a format string such as '[INST] {} [/INST]' and end_sym")


def has_chat_template(folder: Path) -> bool:
    """Whether a tokenizer folder carries a chat template (in tokenizer_config.json, or chat_template.jinja
    as transformers 5 writes it)."""
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    config = folder / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text(encoding="utf-8")).get("chat_template"))


def _check_adapters(model: DictConfig, checker: Checker) -> None:
    """Task adapters (ConLoRA): the one picked, and each against the LLM's LoRA, the encoder's depth and
    the tasks the others select."""
    if model.adapter not in ("auto", "none", *model.adapters):
        checker.fail("model.adapter", f"'{model.adapter}' is not auto, none or an adapter name "
                                      f"(known: {', '.join(model.adapters) or 'none'})")
    if not model.adapters:
        return
    if model.parts.llm.mode == "lora":
        checker.fail("model.lora_r", "task adapters (model.adapters) replace the single LLM LoRA: set lora_r: 0 "
                                     "and parts.llm.mode to frozen or full")
    depth = {**PRESETS[model.vit_model], **model.vit_config}["depth"] if model.vit_model in PRESETS else None
    owner: dict[str, str] = {}
    for name, adapter in model.adapters.items():
        key = f"model.adapters.{name}"
        if not re.fullmatch(r"[A-Za-z_]\w*", str(name)):
            checker.fail(key, "an adapter name must be a Python identifier (letters, digits, _)")
        if depth is not None and not 0 <= adapter.vision_blocks <= depth:
            checker.fail(f"{key}.vision_blocks",
                         f"must be between 0 and the encoder's {depth} blocks, got {adapter.vision_blocks}")
        if not (adapter.vision_blocks and adapter.vision_target_modules) and not adapter.projector \
                and not adapter.llm_target_modules:
            checker.fail(key, "adapts nothing: set vision_blocks, projector or llm_target_modules")
        for task in adapter.tasks:
            if task in owner:
                checker.fail(f"{key}.tasks", f"task '{task}' already selects adapter '{owner[task]}'")
            owner[task] = name


def _check_extra_folder(extra: DictConfig, key: str, checker: Checker) -> None:
    """A transformers extra encoder: its folder read as the vision tower's is; timm-only keys refused."""
    for timm_key in ("weights", "timm_config"):
        if extra[timm_key]:
            checker.fail(f"{key}.{timm_key}", f"is for a timm_model; '{extra.vision_model}' brings its own shape "
                                              "and weights")
    if checker.for_planning:
        return
    try:
        read_folder(resolve_model_folder(extra.vision_model))
    except InputError as error:
        checker.fail(f"{key}.vision_model", str(error))


def _check_mixing(model: DictConfig, checker: Checker) -> None:
    """extra_encoders and sub_image_grid (SPHINX-style mixing): real timm architectures or readable
    transformers folders, and room left for text once an image's tokens are in the context."""
    for index, extra in enumerate(model.extra_encoders):
        key = f"model.extra_encoders.{index}"
        if bool(extra.timm_model) == bool(extra.vision_model):
            checker.fail(f"{key}.timm_model", "set one of timm_model (a timm architecture, e.g. "
                                              "vit_large_patch14_dinov2) and vision_model (a transformers folder)")
        if extra.timm_model and not timm.is_model(extra.timm_model):
            checker.fail(f"{key}.timm_model", f"'{extra.timm_model}' is not a timm architecture "
                                              "(timm.list_models() names them)")
        if extra.vision_model:
            _check_extra_folder(extra, key, checker)
        for stat in ("mean", "std"):
            if extra[stat] is not None and len(extra[stat]) != 3:
                checker.fail(f"{key}.{stat}", f"needs 3 values (R, G, B), got {len(extra[stat])}")
        checker.check_path(f"{key}.weights", extra.weights)
    image_tokens = image_token_count(model)
    if image_tokens >= model.max_context_len:
        grid = f" ({model.sub_image_grid} x {model.sub_image_grid} sub-images)" if model.sub_image_grid > 1 else ""
        checker.fail("model.max_context_len", f"{model.max_context_len}, but one image takes {image_tokens} "
                                              f"tokens{grid}: no room would be left for the prompt's text")
    if model.extra_encoders and model.has_qformer and model.q_former_model:
        checker.fail("model.q_former_model", "BLIP-2's Q-Former cross-attends to the EVA ViT's tokens alone, and "
                                             "with extra_encoders the tokens are wider: leave q_former_model unset "
                                             "(the Q-Former then trains from scratch) or set has_qformer: false")
