"""Frontal faces in an image by OpenCV's Haar cascade: the agent's face_detect tool, and the face data
set's optional check that an annotated image holds a face at all. No weights to download: the cascade
file ships with opencv-python-headless 4.x (OpenCV 5 dropped it, hence the `<5` pin)."""
from __future__ import annotations

import functools
import os

import numpy as np

from minigpt.common.errors import MissingExtraError, optional_module

cv2 = optional_module("cv2")  # opencv-python-headless: the agents extra


class FaceCascadeMissing(RuntimeError):
    """OpenCV's cascade file is not where OpenCV says it is (OpenCV 5, or a broken install)."""


@functools.lru_cache(maxsize=1)
def face_cascade() -> cv2.CascadeClassifier:
    """OpenCV's frontal-face Haar cascade, loaded once per process."""
    if cv2 is None:
        raise MissingExtraError("face detection", "opencv-python-headless", "agents")
    folder = getattr(getattr(cv2, "data", None), "haarcascades", "")
    path = os.path.join(folder, "haarcascade_frontalface_default.xml")
    if not folder or not os.path.exists(path):
        raise FaceCascadeMissing(f"the Haar face cascade is missing ({path or 'no cv2.data'}); OpenCV 5 no longer "
                                 "ships it: install opencv-python-headless<5")
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise FaceCascadeMissing(f"OpenCV could not read the Haar face cascade {path}")
    return cascade


def detect_faces(image: np.ndarray, min_size: int = 30) -> list[list[int]]:
    """Face boxes [x1, y1, x2, y2] in an RGB uint8 image [H, W, 3], largest first."""
    cascade = face_cascade()
    gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    faces = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_size, min_size))
    boxes = [[int(x), int(y), int(x + w), int(y + h)] for x, y, w, h in faces]
    return sorted(boxes, key=lambda box: (box[2] - box[0]) * (box[3] - box[1]), reverse=True)
