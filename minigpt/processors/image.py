"""Image preprocessing: bicubic resize to a square, then CLIP normalisation (as EVA-CLIP was trained)."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from minigpt.common.registry import register_processor

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB. convert("RGB") clips 16-bit grey levels at 255 (a 16-bit scan turns
    white), so those are scaled to 8 bits first."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grey (PNG, TIFF) as PIL reads it
        levels = np.asarray(image, dtype=np.int64).clip(0, 65535) >> 8
        image = Image.fromarray(levels.astype(np.uint8), "L")
    return image.convert("RGB")


@register_processor("blip2_image_train", "blip2_image_eval")
class Blip2ImageProcessor:
    """PIL image -> float tensor [3, image_size, image_size].

    MiniGPT-4 dropped its random crop in late 2023, so train and eval are the same transform;
    `min_scale` / `max_scale` are accepted for old configs and ignored.
    """

    def __init__(self, image_size: int = 224, mean: tuple = CLIP_MEAN, std: tuple = CLIP_STD,
                 min_scale: float = 0.5, max_scale: float = 1.0):
        self.image_size = image_size
        self.transform = transforms.Compose([
            transforms.Resize((image_size, image_size), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(tuple(mean), tuple(std)),
        ])

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.transform(to_rgb(image))
