"""Checks of the vision tower (`model.vit_model` and the keys that go with it): what each kind takes, that
it can be built (a folder with its config and processor files, a timm name, a block that exists), and
that its patch grid fits the concat projector, before any model is built."""
from __future__ import annotations

import timm
from omegaconf import DictConfig

from minigpt.common.errors import InputError
from minigpt.config.validation.checker import Checker
from minigpt.models.image_tokens import CONCAT_TOKENS
from minigpt.models.vision_towers import TIMM_PREFIX, VitLayerError, tower_kind, tower_shape


def check_vision_tower(model: DictConfig, checker: Checker) -> None:
    """The keys that only some kinds take, then the tower's shape (built on the meta device)."""
    kind = tower_kind(model.vit_model)
    if kind == "timm" and not timm.is_model(model.vit_model.removeprefix(TIMM_PREFIX)):
        checker.fail("model.vit_model", f"'{model.vit_model.removeprefix(TIMM_PREFIX)}' is not a timm architecture "
                                        "(timm.list_models() names them)")
    if kind == "transformers":
        for key in ("vit_config", "vit_weights"):
            if model[key]:
                checker.fail(f"model.{key}", f"a transformers tower ('{model.vit_model}') takes its shape and weights "
                                             f"from its folder; {key} is for eva_clip_g and timm:<name> towers")
    if kind == "eva" and model.vit_layer is not None:
        checker.fail("model.vit_layer", "the EVA ViT's layer is its preset's (eva_clip_g: 39 of EVA-CLIP's 40 blocks, "
                                        "as BLIP-2 takes it); vit_config.depth sets another")
    if kind != "eva":
        _check_eva_only_keys(model, checker)
    try:
        shape = tower_shape(model)
    except VitLayerError as error:
        checker.fail("model.vit_layer", str(error))
    except InputError as error:
        checker.fail("model.vit_model", str(error))
    patches = shape.grid * shape.grid
    if not model.has_qformer and patches % CONCAT_TOKENS:
        checker.fail("model.image_size", f"the concat projector (has_qformer: false) joins {CONCAT_TOKENS} neighbouring "
                                         f"patches, but '{model.vit_model}' at {shape.image_size} pixels gives "
                                         f"{shape.grid} x {shape.grid} = {patches}: set an image_size whose patch grid "
                                         "is even, or has_qformer: true")


def _check_eva_only_keys(model: DictConfig, checker: Checker) -> None:
    """BLIP-2's Q-Former weights and LoRA in the encoder's blocks belong to the EVA ViT."""
    if model.has_qformer and model.q_former_model:
        checker.fail("model.q_former_model", "BLIP-2's Q-Former cross-attends to the EVA ViT's tokens, not to those "
                                             f"of '{model.vit_model}': leave q_former_model unset (the Q-Former then "
                                             "trains from scratch)")
    for name, adapter in model.adapters.items():
        if adapter.vision_blocks:
            checker.fail(f"model.adapters.{name}.vision_blocks", "LoRA in the vision encoder's blocks is for the EVA "
                                                                 f"ViT; with '{model.vit_model}' set vision_blocks: 0")
