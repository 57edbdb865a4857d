"""How much of the prompt an image takes, and at what size it comes: one function each, computed from the
`model:` config, used by the model, its collator, the config checks and the data checker alike."""
from __future__ import annotations

from minigpt.models.sub_images import tokens_per_image
from minigpt.models.vision_towers import tower_shape

CONCAT_TOKENS = 4  # neighbouring visual tokens concatenated by the no-Q-Former projector


def image_token_count(cfg) -> int:
    """Image-slot tokens per image for a `model:` config: the one count the model, its collator and the
    config checks use (the Q-Former's queries, or a quarter of the patches, per view)."""
    if cfg.has_qformer:
        per_view = cfg.num_query_token
    else:
        per_view = tower_shape(cfg).grid ** 2 // CONCAT_TOKENS
    return tokens_per_image(per_view, cfg.sub_image_grid)


def input_image_size(cfg) -> int:
    """Pixels per side of the images a `model:` config takes: the tower's image size (model.image_size, or
    the tower's own), times the sub-image grid."""
    return tower_shape(cfg).image_size * cfg.sub_image_grid

