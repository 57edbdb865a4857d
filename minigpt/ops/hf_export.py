"""Export to folders that plain transformers opens (`minigpt export --format hf`).

MiniGPT-4 is BLIP-2's architecture with a Llama language model, so it becomes one
`Blip2ForConditionalGeneration` folder:

    config.json                 a Blip2Config: vision, Q-Former and Llama text_config, image_token_index
    model-0000N-of-0000M.safetensors (+ model.safetensors.index.json)   in the chosen dtype
    tokenizer files             ours plus the special token <image>, and a chat template that writes our
                                prompt format with num_query_tokens <image> where our image embeddings go
    preprocessor_config.json    a BlipImageProcessor with our eval size, bicubic resize, CLIP mean and std
    generation_config.json      greedy, the image token suppressed, our end marker as a stop string

MiniGPT-v2 joins four neighbouring ViT tokens before its linear projector, which no transformers class
does, so it becomes three parts that docs/demos-and-serving.md puts together in a few lines:

    llm/                        a Llama folder (LoRA merged), with the tokenizer and chat template above
    vision/                     a Blip2VisionModel folder: the EVA ViT, ln_vision as its post_layernorm,
                                and preprocessor_config.json
    projector.safetensors       weight [D, 4C] and bias [D] of the linear projector

The LLM's LoRA, or the task adapter named by `adapter`, is merged first (minigpt/ops/export.py).
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch
from huggingface_hub import save_torch_state_dict
from omegaconf import DictConfig
from PIL import Image
from safetensors.torch import save_file
from transformers import (AddedToken, AutoTokenizer, Blip2Config, BlipImageProcessor, GenerationConfig,
                          PretrainedConfig, PreTrainedTokenizerBase)

from minigpt.common.errors import ConfigError
from minigpt.conversation.jinja_template import jinja_chat_template
from minigpt.models.hf_blip2 import blip2_vision_config, to_blip2_vision
from minigpt.models.vision_towers import tower_kind
from minigpt.inference.loading import Placement, load_model
from minigpt.processors.image import CLIP_MEAN, CLIP_STD
from minigpt.ops.export import merged_weights

IMAGE_TOKEN = "<image>"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def export_hf(config: DictConfig, out: str | Path, dtype: str = "float32", max_shard_size: str = "5GB",
              adapter: str | None = None) -> Path:
    """Write `config`'s model to `out` as transformers folders (see the module docstring); -> `out`."""
    if tower_kind(config.model.vit_model) != "eva" or config.model.vit_cls != "keep":
        raise ConfigError("--format", "hf", f"the export's vision model is BLIP-2's EVA ViT with its CLS token, and "
                          f"this model sees through '{config.model.vit_model}' (vit_cls: {config.model.vit_cls}); "
                          "export it with --format merged")
    model = load_model(config, Placement(low_resource=False)).model  # merging needs full weights
    if model.sub_image_grid != 1 or len(model.extra_encoders):
        raise ConfigError("--format", "hf", "sub-images and extra vision encoders have no transformers "
                          "counterpart; export this model with --format merged")
    weights = model.adapters.merged_state_dict(adapter) if model.adapters else merged_weights(model, adapter)
    weights = {key: value.to(DTYPES[dtype]) if value.is_floating_point() else value for key, value in weights.items()}
    out = Path(out)
    llm_folder = out if model.Qformer is not None else out / "llm"
    tokenizer = save_tokenizer(model, llm_folder)
    generation_config(model, tokenizer).save_pretrained(str(llm_folder))
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    llm_config = copy.deepcopy(model.llama_model.config)
    llm_config.vocab_size = max(model.llama_model.get_input_embeddings().num_embeddings, image_token_id + 1)
    llm_config.bos_token_id, llm_config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    llm_config.pad_token_id = tokenizer.pad_token_id
    llm_config.architectures, llm_config.dtype = ["LlamaForCausalLM"], dtype
    tied = ["lm_head.weight"] if llm_config.tie_word_embeddings else []
    vision_config = blip2_vision_config(model.visual_encoder, model.ln_vision)
    if model.Qformer is not None:
        blip2_config = Blip2Config(vision_config=vision_config.to_dict(), qformer_config=model.Qformer.config.to_dict(),
                                   text_config=llm_config.to_dict(), num_query_tokens=model.query_tokens.shape[1],
                                   image_token_index=image_token_id, dtype=dtype)
        blip2_config.architectures = ["Blip2ForConditionalGeneration"]
        blip2 = blip2_state_dict(weights, image_token_id)
        write_folder(out, blip2_config, without(blip2, [f"language_model.{key}" for key in tied]), max_shard_size)
        image_processor(model.input_size).save_pretrained(str(out))
    else:
        llm_weights, vision_weights = llm_and_vision(weights, image_token_id)
        write_folder(llm_folder, llm_config, without(llm_weights, tied), max_shard_size)
        vision_config.architectures, vision_config.dtype = ["Blip2VisionModel"], dtype
        write_folder(out / "vision", vision_config, vision_weights, max_shard_size)
        image_processor(model.input_size).save_pretrained(str(out / "vision"))
        save_file(take(weights, "llama_proj."), out / "projector.safetensors")
    if weights:
        raise ConfigError("--format", "hf", f"weights with no place in the export, e.g. {next(iter(weights))}")
    return out


def blip2_state_dict(weights: dict, image_token_id: int) -> dict:
    """Our MiniGPT-4's weights (plain names) under Blip2ForConditionalGeneration's names, taken out of
    `weights` (what is left has no place in BLIP-2). One mapping for the export and for anything that
    must hold our model's weights as transformers' BLIP-2 (the training benchmark's baseline, whose
    parity test checks this mapping loss for loss)."""
    llm_weights, vision_weights = llm_and_vision(weights, image_token_id)
    return {**prefixed(vision_weights, "vision_model."), **prefixed(take(weights, "Qformer."), "qformer."),
            **take(weights, "query_tokens", keep=True), **prefixed(take(weights, "llama_proj."), "language_projection."),
            **prefixed(llm_weights, "language_model.")}


def llm_and_vision(weights: dict, image_token_id: int) -> tuple[dict, dict]:
    """-> (the LLM's weights with rows up to the image token, the ViT's and ln_vision's as a
    Blip2VisionModel's), taken out of `weights`."""
    llm_weights = llm_with_image_row(take(weights, "llama_model."), image_token_id)
    return llm_weights, to_blip2_vision({**take(weights, "visual_encoder."), **take(weights, "ln_vision.", keep=True)})


def without(weights: dict, keys: list[str]) -> dict:
    """`weights` less `keys` (a tied LM head is saved once, as its embedding)."""
    return {key: value for key, value in weights.items() if key not in keys}


def take(weights: dict, prefix: str, keep: bool = False) -> dict:
    """Remove and return the weights under `prefix` (without it, unless `keep`)."""
    keys = [key for key in weights if key.startswith(prefix)]
    return {(key if keep else key.removeprefix(prefix)): weights.pop(key) for key in keys}


def prefixed(weights: dict, prefix: str) -> dict:
    return {prefix + key: value for key, value in weights.items()}


def llm_with_image_row(weights: dict, image_token_id: int) -> dict:
    """The LLM's weights with rows up to the image token's id in the embedding and the LM head. The image
    token's embedding is always replaced by an image's, and generation suppresses it, so the new rows are
    zeros; the logits of every other token are unchanged."""
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        if key in weights and weights[key].shape[0] <= image_token_id:
            rows = weights[key]
            extra = rows.new_zeros(image_token_id + 1 - rows.shape[0], rows.shape[1])
            weights[key] = torch.cat([rows, extra])  # [V + extra, D]
    return weights


def save_tokenizer(model, folder: Path) -> PreTrainedTokenizerBase:
    """Our tokenizer with the image token and the chat template, saved into `folder` and read back.

    Our collator tokenizes the text between image slots, BOS and EOS piece by piece, each piece with a
    word start in front; Llama's tokenizer does the same between special tokens with `legacy: true`
    (without it only the text's first piece gets one), so the exported tokenizer is saved with it."""
    folder.mkdir(parents=True, exist_ok=True)
    model.tokenizer.save_pretrained(str(folder))
    set_legacy(folder)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    tokenizer.chat_template = jinja_chat_template(model.template, IMAGE_TOKEN * model.num_image_tokens)
    tokenizer.save_pretrained(str(folder))
    set_legacy(folder)
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def set_legacy(folder: Path) -> None:
    path = folder / "tokenizer_config.json"
    settings = json.loads(path.read_text())
    if settings.get("tokenizer_class", "").startswith("Llama"):
        path.write_text(json.dumps({**settings, "legacy": True}, indent=2, ensure_ascii=False) + "\n")


def generation_config(model, tokenizer) -> GenerationConfig:
    end_sym = model.template.end_sym
    return GenerationConfig(
        do_sample=False, max_new_tokens=300, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, suppress_tokens=[tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)],
        stop_strings=[end_sym] if end_sym != tokenizer.eos_token else None)


def image_processor(size: int) -> BlipImageProcessor:
    """Our eval transform (processors/image.py): a bicubic resize to size x size, then CLIP's mean and std."""
    return BlipImageProcessor(do_resize=True, size={"height": size, "width": size}, resample=Image.BICUBIC,
                              do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=list(CLIP_MEAN),
                              image_std=list(CLIP_STD), do_convert_rgb=True)


def write_folder(folder: Path, config: PretrainedConfig, weights: dict, max_shard_size: str) -> None:
    """config.json and the weights, sharded as transformers' save_pretrained shards them; written into a
    sibling folder and moved into place, so a killed export leaves no half-written weights."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    save_torch_state_dict(weights, str(partial), max_shard_size=max_shard_size, metadata={"format": "pt"})
    for stale in [*folder.glob("model*.safetensors"), folder / "model.safetensors.index.json"]:
        stale.unlink(missing_ok=True)
    for written in partial.iterdir():
        written.replace(folder / written.name)
    partial.rmdir()
    config.save_pretrained(str(folder))
