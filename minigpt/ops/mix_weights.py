"""Mix two finetuned checkpoints of one architecture, as SPHINX mixes models tuned on different domains:

    minigpt mix-weights --ckpt A --ckpt B --alpha 0.5 --out C

Every floating-point weight becomes (1 - alpha) * A + alpha * B, computed in float32 and stored in the
checkpoint's dtype; alpha 0 and 1 return A and B as they are. Other tensors (integer buffers) must be
equal. A and B are checkpoint folders (a run folder: its newest checkpoint) or .safetensors files; C is
written as a checkpoint folder (model.safetensors, A's config.yaml, mix.json) that `model.ckpt` loads.

Refused before anything is written: other weight names, shapes or dtypes, configs whose model shape
differs, and LoRA weights. Mixing LoRA factors A and B separately does not mix the updates B @ A they
stand for, so fold them in first (`minigpt export`) and mix the merged checkpoints.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors.torch import save_file

from minigpt.common.checkpoint import read_weights, weights_file
from minigpt.common.errors import InputError
from minigpt.models.adapters import is_adapter_weight
from minigpt.models.vision_towers import EVA_IMAGE_SIZE, tower_kind

# `model:` keys that decide a checkpoint's weight shapes and how they are used.
ARCHITECTURE_KEYS = ("arch", "vit_model", "vit_config", "image_size", "vit_layer", "vit_cls", "has_qformer",
                     "num_query_token", "qformer_config", "proj_type", "extra_encoders", "sub_image_grid",
                     "llama_config", "lora_r", "lora_alpha", "lora_target_modules", "adapters")
ENCODER_SHAPE_KEYS = ("timm_model", "vision_model", "timm_config", "image_size", "mean", "std")  # of each extra encoder


class MixError(InputError):
    """Two checkpoints that cannot be mixed."""


def architecture(path: Path) -> dict | None:
    """The architecture keys of the config.yaml saved beside a checkpoint's weights (None: no config)."""
    config_path = weights_file(path).parent / "config.yaml"
    if not config_path.exists():
        return None
    model = OmegaConf.to_container(OmegaConf.load(config_path).get("model", {}), resolve=True)
    # Where a file sits, or how an encoder trained, says nothing about its shape.
    model["extra_encoders"] = [{key: extra.get(key) for key in ENCODER_SHAPE_KEYS}
                               for extra in model.get("extra_encoders") or []]
    if model.get("image_size") is None and tower_kind(model.get("vit_model", "eva_clip_g")) == "eva":
        model["image_size"] = EVA_IMAGE_SIZE  # unset: EVA's own (configs saved before it could be unset say 224)
    model.setdefault("vit_cls", "keep")  # (configs saved before vit_cls lack it)
    return {key: model.get(key) for key in ARCHITECTURE_KEYS}


def check_compatible(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], names: tuple[str, str],
                     architectures: tuple[dict | None, dict | None]) -> None:
    """Raise MixError naming the first difference that makes A and B not the same architecture."""
    lora = sorted(key for key in a.keys() | b.keys() if is_adapter_weight(key))  # LoRA factors, task adapters' too
    if lora:
        raise MixError(f"cannot mix {names[0]} and {names[1]}: they hold LoRA weights ({len(lora)}, e.g. {lora[0]}), "
                       "whose A and B factors do not mix linearly; fold them into the weights first "
                       "(minigpt export) and mix the merged checkpoints")
    only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
    if only_a or only_b:
        first = f"{only_a[0]} only in {names[0]}" if only_a else f"{only_b[0]} only in {names[1]}"
        raise MixError(f"cannot mix {names[0]} and {names[1]}: their weights differ ({len(only_a)} only in the first, "
                       f"{len(only_b)} only in the second; e.g. {first}). Were they trained with the same parts "
                       "(model.parts, LoRA, adapters)?")
    for key in sorted(a):
        if a[key].shape != b[key].shape or a[key].dtype != b[key].dtype:
            raise MixError(f"cannot mix {names[0]} and {names[1]}: {key} is {a[key].dtype} {tuple(a[key].shape)} in the "
                           f"first, {b[key].dtype} {tuple(b[key].shape)} in the second")
        if not a[key].is_floating_point() and not torch.equal(a[key], b[key]):
            raise MixError(f"cannot mix {names[0]} and {names[1]}: {key} holds {a[key].dtype} values, which do not "
                           "mix, and they differ")
    if architectures.count(None) == 1:
        print(f"warning: only {names[architectures.index(None) ^ 1]} has a config.yaml beside its weights; "
              "the architectures were compared by weight names and shapes alone", file=sys.stderr)
    if None not in architectures:
        for key in ARCHITECTURE_KEYS:
            if architectures[0][key] != architectures[1][key]:
                raise MixError(f"cannot mix {names[0]} and {names[1]}: model.{key} is {architectures[0][key]!r} in the "
                               f"first config, {architectures[1][key]!r} in the second")


def mix(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """(1 - alpha) * a + alpha * b per floating-point tensor, in float32, cast back to the tensor's dtype.
    At alpha 0 or 1 the input is returned as it is (the formula would turn -0.0 into 0.0, 0 * inf into NaN)."""
    if alpha in (0.0, 1.0):
        return {key: value.contiguous() for key, value in (a if alpha == 0.0 else b).items()}
    mixed = {}
    for key, value in a.items():
        if value.is_floating_point():
            value = ((1.0 - alpha) * value.float() + alpha * b[key].float()).to(value.dtype)
        mixed[key] = value.contiguous()
    return mixed


def mix_checkpoints(ckpt_a: str | Path, ckpt_b: str | Path, alpha: float, out: str | Path) -> Path:
    """Check, mix and write C atomically (a temporary folder renamed into place); returns C."""
    if not 0.0 <= alpha <= 1.0:
        raise MixError(f"--alpha {alpha}: must lie in [0, 1] (0: the first checkpoint, 1: the second)")
    out = Path(out)
    if out.exists():
        raise MixError(f"--out {out}: exists; choose a new folder (nothing is overwritten)")
    names = (str(ckpt_a), str(ckpt_b))
    a, b = read_weights(ckpt_a), read_weights(ckpt_b)
    check_compatible(a, b, names, (architecture(Path(ckpt_a)), architecture(Path(ckpt_b))))
    mixed = mix(a, b, alpha)

    staging = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        save_file(mixed, staging / "model.safetensors")
        config_a = weights_file(ckpt_a).parent / "config.yaml"
        if config_a.exists():
            shutil.copyfile(config_a, staging / "config.yaml")
        record = {"first": str(weights_file(ckpt_a)), "second": str(weights_file(ckpt_b)), "alpha": alpha,
                  "formula": "(1 - alpha) * first + alpha * second", "tensors": len(mixed)}
        (staging / "mix.json").write_text(json.dumps(record, indent=1) + "\n")
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a failed write leaves nothing behind
        raise
    return out
