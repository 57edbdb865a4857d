"""Classical tools that look at an image and report what they find: faces, colour regions, superpixels
and dominant colours, all with OpenCV, scikit-image and scikit-learn on the CPU (no weights to load).

Also home of what the classical tools share: the table of colour names (an RGB to draw with and the
OpenCV HSV ranges that count as that colour), `color_name`, and `arguments_schema` for strict arguments.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minigpt.common.errors import optional_module
from minigpt.agents.tool import BOX, BOXES, IMAGE, Tool, ToolContext, ToolError, check_box
from minigpt.processors.faces import FaceCascadeMissing, detect_faces

# The agents extra (classical.py checks they are there).
cv2 = optional_module("cv2")
ndimage = optional_module("scipy.ndimage")
segmentation = optional_module("skimage.segmentation")
cluster = optional_module("sklearn.cluster")

HsvRange = tuple[tuple[int, int, int], tuple[int, int, int]]  # (lower, upper), both inclusive


@dataclass(frozen=True)
class NamedColor:
    rgb: tuple[int, int, int]  # what draw_boxes paints with, and a typical member of the colour
    hsv_ranges: tuple[HsvRange, ...]  # OpenCV HSV: hue 0-179, saturation and value 0-255


def _hues(low: int, high: int, values: tuple[int, int] = (50, 255)) -> HsvRange:
    """Saturated pixels with a hue in [low, high]; saturation below 70 is white, gray or black instead."""
    return (low, 70, values[0]), (high, 255, values[1])


# The ranges partition HSV space, so every pixel has exactly one name: dark pixels are black whatever
# their hue, unsaturated ones white or gray, the rest are named by hue (and dark orange is brown).
COLORS: dict[str, NamedColor] = {
    "red": NamedColor((255, 0, 0), (_hues(0, 7), _hues(170, 179))),
    "orange": NamedColor((255, 128, 0), (_hues(8, 20, (160, 255)),)),
    "brown": NamedColor((139, 69, 19), (_hues(8, 20, (50, 159)),)),
    "yellow": NamedColor((255, 255, 0), (_hues(21, 33),)),
    "green": NamedColor((0, 200, 0), (_hues(34, 80),)),
    "cyan": NamedColor((0, 255, 255), (_hues(81, 99),)),
    "blue": NamedColor((0, 0, 255), (_hues(100, 129),)),
    "purple": NamedColor((128, 0, 255), (_hues(130, 149),)),
    "magenta": NamedColor((255, 0, 255), (_hues(150, 169),)),
    "white": NamedColor((255, 255, 255), (((0, 0, 200), (179, 69, 255)),)),
    "gray": NamedColor((128, 128, 128), (((0, 0, 50), (179, 69, 199)),)),
    "black": NamedColor((0, 0, 0), (((0, 0, 0), (179, 255, 49)),)),
}
COLOR_NAMES = list(COLORS)
MAX_REGIONS = 50  # boxes listed per answer, so that an observation stays short for the planner


def color_mask(image: np.ndarray, name: str) -> np.ndarray:
    """Where an RGB image [H, W, 3] has the named colour: a bool mask [H, W]."""
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    mask = np.zeros(image.shape[:2], dtype=bool)
    for lower, upper in COLORS[name].hsv_ranges:
        mask |= cv2.inRange(hsv, np.array(lower), np.array(upper)) > 0
    return mask


def color_name(rgb) -> str:
    """The name from COLORS of one RGB colour, by the same HSV ranges that find_color_regions uses."""
    pixel = np.asarray(rgb, dtype=np.uint8).reshape(1, 1, 3)
    return next(name for name in COLORS if color_mask(pixel, name)[0, 0])


def arguments_schema(required: dict, optional: dict | None = None, **extra) -> dict:
    """A strict JSON Schema object: unknown argument names are refused rather than silently ignored."""
    return {"type": "object", "properties": {**required, **(optional or {})}, "required": list(required),
            "additionalProperties": False, **extra}


def boxes_result(**extra) -> dict:
    return {"type": "object", "properties": {"boxes": BOXES, "count": {"type": "integer"}, **extra},
            "required": ["boxes", "count"]}


def face_detect(context: ToolContext, arguments: dict) -> dict:
    try:
        boxes = detect_faces(context.image(arguments["image"]), arguments.get("min_size", 30))
    except FaceCascadeMissing as error:
        raise ToolError(str(error)) from None
    return {"boxes": boxes, "count": len(boxes)}


def find_color_regions(context: ToolContext, arguments: dict) -> dict:
    """Connected regions of one named colour, largest first; count includes those past MAX_REGIONS."""
    image = context.image(arguments["image"])
    mask = color_mask(image, arguments["color"]).astype(np.uint8)
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    stats = stats[1:]  # [regions, 5]: x, y, width, height, area; label 0 is everything else
    stats = stats[stats[:, cv2.CC_STAT_AREA] >= arguments.get("min_area", 50)]
    stats = stats[np.argsort(-stats[:, cv2.CC_STAT_AREA], kind="stable")]
    boxes = [[int(x), int(y), int(x + w), int(y + h)] for x, y, w, h, _ in stats[:MAX_REGIONS]]
    return {"boxes": boxes, "areas": [int(area) for area in stats[:MAX_REGIONS, cv2.CC_STAT_AREA]],
            "count": len(stats)}


def superpixels(context: ToolContext, arguments: dict) -> dict:
    """SLIC superpixels: regions of similar colour, each with its box, area and colour name."""
    image = context.image(arguments["image"])
    labels = segmentation.slic(image, n_segments=arguments.get("segments", 50), compactness=10, start_label=0)  # [H, W]
    count = int(labels.max()) + 1
    areas = np.bincount(labels.ravel(), minlength=count)
    sums = np.stack([np.bincount(labels.ravel(), weights=image[:, :, channel].ravel(), minlength=count)
                     for channel in range(3)], axis=1)  # [count, 3]
    means = np.round(sums / np.maximum(areas, 1)[:, None]).astype(int)
    segments = []
    for label, found in enumerate(ndimage.find_objects(labels + 1)):
        if found is None:  # SLIC may leave a label unused
            continue
        rows, cols = found
        segments.append({"box": [cols.start, rows.start, cols.stop, rows.stop], "area": int(areas[label]),
                         "color": color_name(means[label]), "mean_rgb": means[label].tolist()})
    outlined = (segmentation.mark_boundaries(image, labels, color=(1, 1, 0)) * 255).round().astype(np.uint8)
    handle = context.add_image(outlined, parent=arguments["image"], tool="superpixels", arguments=arguments)
    return {"segments": segments, "count": len(segments), "image": handle}


def dominant_colors(context: ToolContext, arguments: dict) -> dict:
    """k-means on (a sample of) the pixels, in the box if one is given; shares add up to 1."""
    image = context.image(arguments["image"])
    if "box" in arguments:
        x1, y1, x2, y2 = check_box(arguments["box"], image)
        image = image[y1:y2, x1:x2]
    pixels = image.reshape(-1, 3)  # [H * W, 3]
    if len(pixels) > 20000:
        pixels = pixels[np.random.default_rng(0).choice(len(pixels), 20000, replace=False)]
    k = min(arguments.get("k", 5), len(np.unique(pixels, axis=0)))  # no more clusters than distinct colours
    kmeans = cluster.KMeans(n_clusters=k, n_init=3, random_state=0).fit(pixels.astype(np.float32))
    shares = np.bincount(kmeans.labels_, minlength=k) / len(pixels)
    colors = [{"name": color_name(center), "rgb": [int(v) for v in center], "share": round(float(share), 3)}
              for center, share in zip(np.clip(np.round(kmeans.cluster_centers_), 0, 255), shares)]
    return {"colors": sorted(colors, key=lambda color: -color["share"])}


def find_tools() -> list[Tool]:
    image_only = {"image": IMAGE}
    color = {"type": "string", "enum": COLOR_NAMES}
    segment = {"type": "object", "properties": {"box": BOX, "area": {"type": "integer"}, "color": color,
                                                "mean_rgb": {"type": "array", "items": {"type": "integer"}}}}
    named_rgb = {"type": "object", "properties": {"name": color, "rgb": {"type": "array"},
                                                  "share": {"type": "number"}}}
    return [
        Tool("face_detect", "Find frontal faces (OpenCV Haar cascade); boxes largest first.",
             arguments_schema(image_only, {"min_size": {"type": "integer", "minimum": 10, "maximum": 2000,
                                                        "description": "smallest face side in pixels (30)"}}),
             face_detect, boxes_result(), memory_mb=50),
        Tool("find_color_regions", "Find connected regions of one named colour; boxes largest first, areas in "
             "pixels; count is all regions found, boxes list at most 50.",
             arguments_schema({**image_only, "color": color},
                              {"min_area": {"type": "integer", "minimum": 1, "description": "pixels (50)"}}),
             find_color_regions, boxes_result(areas={"type": "array", "items": {"type": "integer"}}),
             memory_mb=50),
        Tool("superpixels", "Split the image into regions of similar colour (SLIC); gives each region's box, area "
             "and colour name, and a new image with the region outlines drawn in yellow.",
             arguments_schema(image_only, {"segments": {"type": "integer", "minimum": 2, "maximum": 200,
                                                        "description": "about how many regions (50)"}}),
             superpixels, {"type": "object", "properties": {"segments": {"type": "array", "items": segment},
                                                            "count": {"type": "integer"}, "image": IMAGE},
                           "required": ["segments", "count", "image"]}, memory_mb=200),
        Tool("dominant_colors", "The k main colours of the image (or of a box in it) by k-means, with each "
             "colour's name, RGB and share of the pixels, largest share first.",
             arguments_schema(image_only, {"k": {"type": "integer", "minimum": 1, "maximum": 8,
                                                 "description": "how many colours (5)"}, "box": BOX}),
             dominant_colors, {"type": "object", "properties": {"colors": {"type": "array", "items": named_rgb}},
                               "required": ["colors"]}, memory_mb=100),
    ]
