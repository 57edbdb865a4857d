"""Classical tools that make a new image from one: edges, crop, blur/pixelate/inpaint inside a box,
GrabCut cutout, boxes drawn, resize, rotate, pencil sketch and painterly styles (OpenCV on the CPU).

Every tool leaves its input untouched and answers with the handle of a new image whose provenance
names the input, the tool and the arguments.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from minigpt.agents.classical_find import COLOR_NAMES, COLORS, arguments_schema
from minigpt.common.errors import optional_module
from minigpt.agents.tool import BOX, BOXES, IMAGE, IMAGE_RESULT, Tool, ToolContext, ToolError, check_box

cv2 = optional_module("cv2")  # the agents extra (classical.py checks it is there)

Box = tuple[int, int, int, int]
MAX_SIDE = 8192  # largest side resize and rotate may produce


def new_image(context: ToolContext, array: np.ndarray, tool: str, arguments: dict) -> dict:
    return {"image": context.add_image(array, parent=arguments["image"], tool=tool, arguments=arguments)}


def replace_inside_box(context: ToolContext, arguments: dict, tool: str,
                       make_region: Callable[[np.ndarray, Box], np.ndarray]) -> dict:
    """A new image equal to the input outside the box and to make_region(image, box) inside it, so that a
    local edit can never leak past its box (make_region may still look at the pixels around the box)."""
    image = context.image(arguments["image"])
    x1, y1, x2, y2 = box = check_box(arguments["box"], image)
    edited = image.copy()
    edited[y1:y2, x1:x2] = make_region(image, box)
    return new_image(context, edited, tool, arguments)


def edges(context: ToolContext, arguments: dict) -> dict:
    low, high = arguments.get("low", 100), arguments.get("high", 200)
    if low >= high:
        raise ToolError(f"low ({low}) must be below high ({high})")
    gray = cv2.cvtColor(context.image(arguments["image"]), cv2.COLOR_RGB2GRAY)
    found = cv2.Canny(gray, low, high)  # [H, W], 255 on edges
    return new_image(context, np.repeat(found[:, :, None], 3, axis=2), "edges", arguments)


def crop(context: ToolContext, arguments: dict) -> dict:
    image = context.image(arguments["image"])
    x1, y1, x2, y2 = check_box(arguments["box"], image)
    return new_image(context, image[y1:y2, x1:x2], "crop", arguments)


def blur_region(context: ToolContext, arguments: dict) -> dict:
    kernel = 2 * arguments.get("strength", 10) + 1

    def blurred(image: np.ndarray, box: Box) -> np.ndarray:
        x1, y1, x2, y2 = box
        return cv2.GaussianBlur(image[y1:y2, x1:x2], (kernel, kernel), 0)

    return replace_inside_box(context, arguments, "blur_region", blurred)


def pixelate_region(context: ToolContext, arguments: dict) -> dict:
    block = arguments.get("block", 10)

    def pixelated(image: np.ndarray, box: Box) -> np.ndarray:
        x1, y1, x2, y2 = box
        width, height = x2 - x1, y2 - y1
        small = cv2.resize(image[y1:y2, x1:x2], (math.ceil(width / block), math.ceil(height / block)),
                           interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)

    return replace_inside_box(context, arguments, "pixelate_region", pixelated)


def inpaint_region(context: ToolContext, arguments: dict) -> dict:
    """Fill the box from the pixels around it (OpenCV's Telea inpainting), e.g. to remove an object."""
    radius = arguments.get("radius", 5)

    def filled(image: np.ndarray, box: Box) -> np.ndarray:
        x1, y1, x2, y2 = box
        if (x2 - x1, y2 - y1) == (image.shape[1], image.shape[0]):
            raise ToolError("the box covers the whole image: nothing is left around it to fill it from")
        mask = np.zeros(image.shape[:2], dtype=np.uint8)
        mask[y1:y2, x1:x2] = 255
        return cv2.inpaint(image, mask, radius, cv2.INPAINT_TELEA)[y1:y2, x1:x2]

    return replace_inside_box(context, arguments, "inpaint_region", filled)


def cutout(context: ToolContext, arguments: dict) -> dict:
    """GrabCut the object in the box; the new image keeps its size with everything else set to white."""
    image = context.image(arguments["image"])
    x1, y1, x2, y2 = check_box(arguments["box"], image)
    if (x2 - x1, y2 - y1) == (image.shape[1], image.shape[0]):
        raise ToolError("the box covers the whole image: GrabCut needs some background outside the box")
    labels = np.zeros(image.shape[:2], dtype=np.uint8)
    background_model, foreground_model = np.zeros((1, 65)), np.zeros((1, 65))
    cv2.grabCut(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), labels, (x1, y1, x2 - x1, y2 - y1), background_model,
                foreground_model, arguments.get("iterations", 5), cv2.GC_INIT_WITH_RECT)
    foreground = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    if not foreground.any():
        raise ToolError(f"GrabCut found no foreground in box {arguments['box']}")
    rows, cols = np.nonzero(foreground)
    result = np.where(foreground[:, :, None], image, np.uint8(255))
    tight = [int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1]
    return {**new_image(context, result, "cutout", arguments), "mask_area": int(foreground.sum()), "box": tight}


def paint_border(image: np.ndarray, box: Box, color: tuple[int, int, int], thickness: int) -> None:
    """A frame drawn just inside the box, so that it covers none of what lies outside (unlike cv2.rectangle)."""
    x1, y1, x2, y2 = box
    for rows, cols in ((slice(y1, y1 + thickness), slice(x1, x2)), (slice(y2 - thickness, y2), slice(x1, x2)),
                       (slice(y1, y2), slice(x1, x1 + thickness)), (slice(y1, y2), slice(x2 - thickness, x2))):
        image[rows, cols] = color


def draw_boxes(context: ToolContext, arguments: dict) -> dict:
    image = context.image(arguments["image"])
    boxes, labels = arguments["boxes"], arguments.get("labels")
    if labels is not None and len(labels) != len(boxes):
        raise ToolError(f"got {len(labels)} labels for {len(boxes)} boxes: give one label per box or none")
    color = COLORS[arguments.get("color", "red")].rgb
    thickness = max(2, round(min(image.shape[:2]) / 200))
    drawn = image.copy()
    for index, box in enumerate(boxes):
        x1, y1, x2, y2 = check_box(box, image, name=f"boxes[{index}]")
        paint_border(drawn, (x1, y1, x2, y2), color, thickness)
        if labels:
            scale = thickness / 4
            baseline = y1 - thickness - 2 if y1 > 20 * scale else y1 + int(22 * scale)
            cv2.putText(drawn, labels[index], (x1, baseline), cv2.FONT_HERSHEY_SIMPLEX, scale, color,
                        max(1, thickness // 2), cv2.LINE_AA)
    return new_image(context, drawn, "draw_boxes", arguments)


def resize(context: ToolContext, arguments: dict) -> dict:
    """To width and/or height (one side keeps the aspect ratio) or by scale."""
    image = context.image(arguments["image"])
    height, width = image.shape[:2]
    if "scale" in arguments and ("width" in arguments or "height" in arguments):
        raise ToolError("give scale, or width and/or height, not both")
    scale = arguments.get("scale")
    if scale is None:
        scale = arguments["width"] / width if "width" in arguments else arguments["height"] / height
    size = (arguments.get("width", round(width * scale)), arguments.get("height", round(height * scale)))
    if min(size) < 1 or max(size) > MAX_SIDE:
        raise ToolError(f"the {width}x{height} image would become {size[0]}x{size[1]}; sides must be 1 to "
                        f"{MAX_SIDE} pixels")
    shrinking = size[0] * size[1] < width * height
    resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    return new_image(context, resized, "resize", arguments)


def rotate(context: ToolContext, arguments: dict) -> dict:
    """Counter-clockwise by angle degrees; uncovered corners are black. With expand (the default) the
    canvas grows to hold the whole rotated image; quarter turns are then exact (no resampling)."""
    image = context.image(arguments["image"])
    angle, expand = arguments["angle"], arguments.get("expand", True)
    if expand and angle % 90 == 0:
        return new_image(context, np.rot90(image, k=int(angle // 90) % 4), "rotate", arguments)
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)  # [2, 3] affine
    if expand:
        cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
        width, height = math.ceil(height * sin + width * cos), math.ceil(height * cos + width * sin)
        matrix[:, 2] += (width - image.shape[1]) / 2, (height - image.shape[0]) / 2
    if max(width, height) > MAX_SIDE:
        raise ToolError(f"the rotated image would be {width}x{height}; sides must be at most {MAX_SIDE} pixels")
    rotated = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    return new_image(context, rotated, "rotate", arguments)


def sketch(context: ToolContext, arguments: dict) -> dict:
    """Pencil sketch by colour dodge: gray divided by its blurred negative, so flat areas go white."""
    gray = cv2.cvtColor(context.image(arguments["image"]), cv2.COLOR_RGB2GRAY)
    blurred_negative = cv2.GaussianBlur(255 - gray, (21, 21), 0)
    drawn = cv2.divide(gray, 255 - blurred_negative, scale=256)  # [H, W]
    return new_image(context, np.repeat(drawn[:, :, None], 3, axis=2), "sketch", arguments)


def cartoon(image: np.ndarray) -> np.ndarray:
    """Flat colours (repeated bilateral filtering) under dark outlines (adaptive threshold of the gray)."""
    flat = image
    for _ in range(3):
        flat = cv2.bilateralFilter(flat, 9, 50, 50)
    gray = cv2.medianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 7)
    outlines = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 5)
    return cv2.bitwise_and(flat, flat, mask=outlines)


STYLES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "cartoon": cartoon,
    "watercolor": lambda image: cv2.stylization(image, sigma_s=60, sigma_r=0.45),
    "smooth": lambda image: cv2.edgePreservingFilter(image, flags=cv2.RECURS_FILTER, sigma_s=60, sigma_r=0.4),
    "detail": lambda image: cv2.detailEnhance(image, sigma_s=10, sigma_r=0.15),
}


def stylize(context: ToolContext, arguments: dict) -> dict:
    styled = STYLES[arguments["style"]](context.image(arguments["image"]))
    return new_image(context, styled, "stylize", arguments)


def edit_tools() -> list[Tool]:
    image_only, image_box = {"image": IMAGE}, {"image": IMAGE, "box": BOX}

    def tool(name: str, description: str, run: Callable, parameters: dict, memory_mb: int = 50) -> Tool:
        return Tool(name, description, parameters, run, IMAGE_RESULT, memory_mb=memory_mb)

    def whole(minimum: int, maximum: int, description: str) -> dict:
        return {"type": "integer", "minimum": minimum, "maximum": maximum, "description": description}

    side = whole(1, MAX_SIDE, "pixels")
    cutout_result = {"type": "object", "properties": {"image": IMAGE, "mask_area": {"type": "integer"}, "box": BOX},
                     "required": ["image", "mask_area", "box"]}
    return [
        tool("edges", "Canny edges: a new image, edges white on black.", edges,
             arguments_schema(image_only, {"low": whole(0, 1000, "lower threshold (100)"),
                                           "high": whole(1, 1000, "upper threshold (200)")})),
        tool("crop", "Cut out the box as a new image.", crop, arguments_schema(image_box)),
        tool("blur_region", "Gaussian-blur inside the box only (e.g. to hide a face).", blur_region,
             arguments_schema(image_box, {"strength": whole(1, 50, "blur radius in pixels (10)")})),
        tool("pixelate_region", "Pixelate inside the box only, in square blocks.", pixelate_region,
             arguments_schema(image_box, {"block": whole(2, 256, "block side in pixels (10)")})),
        tool("inpaint_region", "Remove what is in the box by filling it from its surroundings (Telea).",
             inpaint_region, arguments_schema(image_box, {"radius": whole(1, 50, "pixels looked at (5)")})),
        Tool("cutout", "Separate the object in the box from its background (GrabCut): a new image of the same "
             "size with the background white, the object's area in pixels and its tight box.",
             arguments_schema(image_box, {"iterations": whole(1, 10, "GrabCut rounds (5)")}), cutout,
             cutout_result, memory_mb=100),
        tool("draw_boxes", "Draw boxes, with optional labels, on a copy of the image.", draw_boxes,
             arguments_schema({"image": IMAGE, "boxes": {**BOXES, "minItems": 1}},
                              {"labels": {"type": "array", "items": {"type": "string", "maxLength": 40}},
                               "color": {"type": "string", "enum": COLOR_NAMES}})),
        tool("resize", "Resize by scale, or to width and/or height (one side given keeps the aspect ratio).",
             resize, arguments_schema(image_only, {"width": side, "height": side,
                                                   "scale": {"type": "number", "exclusiveMinimum": 0, "maximum": 8}},
                                      anyOf=[{"required": ["width"]}, {"required": ["height"]},
                                             {"required": ["scale"]}])),
        tool("rotate", "Rotate counter-clockwise by angle degrees; expand (default true) grows the canvas to keep "
             "the corners, which are filled black.", rotate,
             arguments_schema({**image_only, "angle": {"type": "number", "minimum": -360, "maximum": 360}},
                              {"expand": {"type": "boolean"}})),
        tool("sketch", "A pencil sketch of the image (dark lines on white).", sketch, arguments_schema(image_only)),
        tool("stylize", "Repaint in a style: cartoon (flat colours, dark outlines), watercolor, smooth "
             "(edge-preserving smoothing) or detail (enhanced detail).", stylize,
             arguments_schema({**image_only, "style": {"type": "string", "enum": list(STYLES)}}), memory_mb=200),
    ]
