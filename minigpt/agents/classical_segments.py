"""Region semantics without a segmentation model: SLIC superpixels named by colour and merged into
regions, each with its colour name, a position word and a box.

Every pixel gets a colour name (classical_find.COLORS); a superpixel takes its pixels' most common name,
and touching superpixels of one name merge into a region. The background (the name most of the border
carries) and regions below `min_share` of the image are left out, so a plain image has no region.
"""
from __future__ import annotations

import numpy as np

from minigpt.agents.classical_find import COLOR_NAMES, arguments_schema, color_mask
from minigpt.common.errors import optional_module
from minigpt.agents.tool import BOX, IMAGE, Tool, ToolContext
from minigpt.conversation.boxes import position_word

# The agents extra (classical.py checks they are there).
ndimage = optional_module("scipy.ndimage")
segmentation = optional_module("skimage.segmentation")

MAX_SEGMENTS = 20


def color_name_map(image: np.ndarray) -> np.ndarray:
    """The index into COLOR_NAMES of every pixel's colour: int [H, W] (the HSV ranges partition the space)."""
    names = np.zeros(image.shape[:2], dtype=np.int64)
    for index, name in enumerate(COLOR_NAMES):
        names[color_mask(image, name)] = index
    return names


def superpixel_names(labels: np.ndarray, names: np.ndarray) -> np.ndarray:
    """Each superpixel's most common colour index: int [superpixels]."""
    counts = np.zeros((labels.max() + 1, len(COLOR_NAMES)), dtype=np.int64)  # [superpixels, colours]
    np.add.at(counts, (labels.ravel(), names.ravel()), 1)
    return counts.argmax(axis=1)


def merged_regions(labels: np.ndarray, superpixel_color: np.ndarray) -> np.ndarray:
    """Touching superpixels of one colour as one region: the colour-index map, split into connected parts.
    -> (region id [H, W], colour index of each region id)."""
    color_map = superpixel_color[labels]  # [H, W]
    regions = np.zeros(labels.shape, dtype=np.int64)
    region_colors, next_id = [], 0
    for color in np.unique(color_map):
        parts, count = ndimage.label(color_map == color)
        regions[parts > 0] = parts[parts > 0] + next_id - 1
        region_colors += [int(color)] * count
        next_id += count
    return regions, np.array(region_colors, dtype=np.int64)


def background_color(color_map: np.ndarray) -> int:
    border = np.concatenate([color_map[0], color_map[-1], color_map[:, 0], color_map[:, -1]])
    return int(np.bincount(border).argmax())


def color_segments(context: ToolContext, arguments: dict) -> dict:
    image = context.image(arguments["image"])
    height, width = image.shape[:2]
    labels = segmentation.slic(image, n_segments=arguments.get("segments", 100), compactness=10, start_label=0)  # [H, W]
    superpixel_color = superpixel_names(labels, color_name_map(image))
    regions, region_colors = merged_regions(labels, superpixel_color)
    background = background_color(superpixel_color[labels])
    areas = np.bincount(regions.ravel(), minlength=len(region_colors))
    min_area = arguments.get("min_share", 0.01) * height * width
    found = []
    for region, box_slices in enumerate(ndimage.find_objects(regions + 1)):
        if box_slices is None or areas[region] < min_area:
            continue
        rows, cols = box_slices
        box = [cols.start, rows.start, cols.stop, rows.stop]
        touches_border = box[0] == 0 or box[1] == 0 or box[2] == width or box[3] == height
        if region_colors[region] == background and touches_border:
            continue
        found.append({"color": COLOR_NAMES[region_colors[region]], "position": position_word(box, width, height),
                      "box": [int(value) for value in box], "share": round(float(areas[region]) / (height * width), 4)})
    found.sort(key=lambda segment: -segment["share"])
    outlined = (segmentation.mark_boundaries(image, regions, color=(1, 1, 0)) * 255).round().astype(np.uint8)
    handle = context.add_image(outlined, parent=arguments["image"], tool="color_segments", arguments=arguments)
    return {"segments": found[:MAX_SEGMENTS], "count": len(found), "background": COLOR_NAMES[background],
            "image": handle}


def segment_tools() -> list[Tool]:
    segment = {"type": "object", "properties": {
        "color": {"type": "string", "enum": COLOR_NAMES}, "position": {"type": "string"}, "box": BOX,
        "share": {"type": "number"}}, "required": ["color", "position", "box", "share"]}
    return [Tool(
        "color_segments", "Regions of one colour (superpixels merged), each with its colour name, position word "
        "(top left ... bottom right), box and share of the image, largest first; the background is left out.",
        arguments_schema({"image": IMAGE}, {
            "segments": {"type": "integer", "minimum": 4, "maximum": 1000,
                         "description": "superpixels to start from (100)"},
            "min_share": {"type": "number", "minimum": 0, "maximum": 1, "description": "smallest region kept (0.01)"}}),
        color_segments, {"type": "object", "required": ["segments", "count", "background", "image"], "properties": {
            "segments": {"type": "array", "items": segment}, "count": {"type": "integer"},
            "background": {"type": "string"}, "image": IMAGE}}, memory_mb=200)]
