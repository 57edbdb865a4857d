"""The config's vision side, settled as it loads (models/vision_towers.py):

- The model defaults describe the EVA ViT-g: with another tower, their EVA file, BLIP-2's Q-Former (trained
  on EVA's tokens) and EVA's image size do not apply, unless the config sets them itself.
- The tower's normalisation is written into every image processor that leaves it unset, so that training,
  evaluation and chat feed the tower pixels as its own processor would. An EVA config is left as written:
  the processors' defaults are EVA's CLIP statistics.
"""
from __future__ import annotations

import inspect

from omegaconf import DictConfig

from minigpt.common import registry
from minigpt.config.validation import source_of
from minigpt.models.vision_towers import tower_kind, tower_shape

EVA_DEFAULTS = ("vit_weights", "q_former_model", "image_size")  # what the model defaults set for the EVA ViT


def drop_eva_defaults(model: DictConfig, sources: list[tuple[str, DictConfig]]) -> None:
    """With a tower other than EVA, the EVA settings that came from the model defaults are unset."""
    if tower_kind(model.vit_model) == "eva":
        return
    for key in EVA_DEFAULTS:
        if source_of(sources, f"model.{key}") == "defaults":
            model[key] = None


def fill_tower_normalisation(config: DictConfig) -> None:
    """Every `vis_processor` (of datasets and evaluation_datasets) whose class takes mean and std gets the
    tower's where it sets none; run after validation, which refuses a mean or std that is not the tower's."""
    if tower_kind(config.model.vit_model) == "eva":
        return
    shape = tower_shape(config.model)
    for top in ("datasets", "evaluation_datasets"):
        for section in config[top].values():
            for processor in ((section or {}).get("vis_processor") or {}).values():
                try:
                    accepted = inspect.signature(registry.get("processor", processor.get("name")).__init__).parameters
                except KeyError:  # (an unknown name in a section not validated: left for its own checks)
                    continue
                for stat, value in (("mean", shape.mean), ("std", shape.std)):
                    if stat in accepted and processor.get(stat) is None:
                        processor[stat] = list(value)
