"""The images of one agent conversation, by opaque handle (img_0, img_1, ...).

A planner never sees or writes a path: it names images by handle, and each image keeps where it came
from (its parent image, the tool and the arguments that made it). Every image is saved as a PNG in the
conversation's folder as soon as it exists, with provenance.jsonl beside, so nothing is lost when a
run stops early.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

HANDLE_PATTERN = r"^img_[0-9]+$"


class UnknownImageError(KeyError):
    """A handle that names no image of this conversation."""

    def __str__(self) -> str:
        return self.args[0]


@dataclass
class Provenance:
    handle: str
    parent: str | None = None
    tool: str | None = None
    arguments: dict = field(default_factory=dict)
    file: str = ""


class ImageStore:
    """Images as RGB uint8 arrays [H, W, 3], saved to `folder` as they are added."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._images: dict[str, np.ndarray] = {}
        self.provenance: dict[str, Provenance] = {}

    @property
    def handles(self) -> list[str]:
        return list(self._images)

    def add(self, image: np.ndarray | Image.Image, parent: str | None = None, tool: str | None = None,
            arguments: dict | None = None) -> str:
        array = as_rgb_array(image)
        handle = f"img_{len(self._images)}"
        path = self.folder / f"{handle}.png"
        Image.fromarray(array).save(path)
        self._images[handle] = array
        self.provenance[handle] = Provenance(handle, parent, tool, dict(arguments or {}), path.name)
        with open(self.folder / "provenance.jsonl", "a") as log:
            log.write(json.dumps(asdict(self.provenance[handle])) + "\n")
        return handle

    def get(self, handle: str) -> np.ndarray:
        if handle not in self._images:
            known = ", ".join(self._images) or "none yet"
            raise UnknownImageError(f"unknown image handle {handle!r} (this conversation's images: {known})")
        return self._images[handle]

    def path(self, handle: str) -> Path:
        self.get(handle)
        return self.folder / self.provenance[handle].file


def as_rgb_array(image: np.ndarray | Image.Image) -> np.ndarray:
    """An RGB uint8 array [H, W, 3] from a PIL image or an array (gray [H, W] or RGBA are converted)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB")).copy()
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"an image array must be uint8, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"an image array must be [H, W, 3], got shape {tuple(array.shape)}")
    return np.ascontiguousarray(array[:, :, :3])
