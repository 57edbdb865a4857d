"""The classical visual tools: OpenCV, scikit-image and scikit-learn on the CPU, with nothing to
download. Tools that look at an image live in classical_find (colour regions in classical_segments), tools that make a new one in
classical_edit; the colour-name table and `color_name` are re-exported here for other modules."""
from __future__ import annotations

import importlib.util

from minigpt.agents.classical_edit import edit_tools
from minigpt.agents.classical_find import COLOR_NAMES, COLORS, NamedColor, color_mask, color_name, find_tools
from minigpt.agents.classical_segments import segment_tools
from minigpt.agents.tool import Tool
from minigpt.common.errors import MissingExtraError

LIBRARIES = {"cv2": "opencv-python-headless", "skimage": "scikit-image", "sklearn": "scikit-learn", "scipy": "scipy"}

__all__ = ["COLORS", "COLOR_NAMES", "NamedColor", "classical_tools", "color_mask", "color_name"]


def classical_tools() -> list[Tool]:
    """Every classical tool, those that find things first. Their libraries come with the agents extra."""
    for module, distribution in LIBRARIES.items():
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError("the classical tools", distribution, "agents")
    return find_tools() + segment_tools() + edit_tools()
