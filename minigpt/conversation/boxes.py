"""Boxes in text, both ways, as MiniGPT-v2 writes them.

A box is `{<x1><y1><x2><y2>}`: its corners as integers 0-100, the pixel coordinate divided by the image
side, times 100, truncated. Several boxes in one group are joined by `<delim>`; a phrase written
`<p>a red square</p>` names the boxes that follow it:

    <p>a red square</p> {<12><40><55><98>}<delim>{<60><5><80><25>} and <p>a circle</p> {<1><2><30><33>}

Reading back, a value v stands for the middle of its bin, (v + 0.5) / 100 of the side, so that
formatting a parsed box gives the same tokens again. Model output is not always well formed: groups
that cannot be read are reported in `problems` and skipped, never raised.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from minigpt.common.drawing import FONT_SIZE, draw_text, text_width

_PIECE = re.compile(r"<p>(?P<phrase>.*?)</p>|\{(?P<boxes>[^{}]*)\}")
_BOX = re.compile(r"\s*<(\d{1,3})>\s*<(\d{1,3})>\s*<(\d{1,3})>\s*<(\d{1,3})>\s*")
DELIMITER = "<delim>"
POSITION_WORDS = (("top left", "top", "top right"), ("left", "center", "right"),
                  ("bottom left", "bottom", "bottom right"))
LABEL_HEIGHT = FONT_SIZE + 3
COLORS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324")


def box_tokens(x1: float, y1: float, x2: float, y2: float, width: float, height: float) -> str:
    """A pixel box (corners) as `{<x1><y1><x2><y2>}` on the 0-100 grid."""
    scaled = (x1 / width, y1 / height, x2 / width, y2 / height)
    return "{" + "".join(f"<{min(100, max(0, int(v * 100)))}>" for v in scaled) + "}"


def xywh_box_tokens(box: list[float], width: float, height: float) -> str:
    """COCO's [x, y, w, h] box as 0-100 tokens."""
    x, y, w, h = box
    return box_tokens(x, y, x + w, y + h, width, height)


@dataclass
class GroundedBox:
    label: str | None  # the phrase before the box, if any
    box: tuple[float, float, float, float]  # pixel corners x1, y1, x2, y2


@dataclass
class ParsedBoxes:
    boxes: list[GroundedBox] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def parse_boxes(text: str, width: float, height: float) -> ParsedBoxes:
    """Every readable box in `text`, in pixels, with the phrase that names it; the rest as problems."""
    result = ParsedBoxes()
    label: str | None = None
    for match in _PIECE.finditer(text):
        if match.group("phrase") is not None:
            label = match.group("phrase").strip() or None
            continue
        for part in match.group("boxes").split(DELIMITER):
            values = _BOX.fullmatch(part)
            if values is None:
                result.problems.append(f"not a box: {{{part}}}" if DELIMITER not in match.group("boxes")
                                       else f"not a box: {part!r} in {{{match.group('boxes')}}}")
                continue
            x1, y1, x2, y2 = (int(v) for v in values.groups())
            if max(x1, y1, x2, y2) > 100 or x2 < x1 or y2 < y1:
                result.problems.append(f"impossible box <{x1}><{y1}><{x2}><{y2}> (values 0-100, x1 <= x2, y1 <= y2)")
                continue
            corners = (min(width, (x1 + 0.5) / 100 * width), min(height, (y1 + 0.5) / 100 * height),
                       min(width, (x2 + 0.5) / 100 * width), min(height, (y2 + 0.5) / 100 * height))
            result.boxes.append(GroundedBox(label, corners))
    leftover = _PIECE.sub("", text)
    if "{" in leftover or "}" in leftover:
        result.problems.append("unbalanced braces: a box group is not closed")
    return result


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two corner boxes."""
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def position_word(box: tuple[float, ...], width: float, height: float) -> str:
    """Where a box's centre lies, in words: the cell of a 3 x 3 grid over the image ("top left", "center")."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return POSITION_WORDS[min(int(3 * cy / height), 2)][min(int(3 * cx / width), 2)]


def draw_boxes(image: Image.Image, boxes: list[GroundedBox]) -> Image.Image:
    """A copy of `image` with each box outlined and labelled in its own colour."""
    canvas = image.convert("RGB").copy()
    pen = ImageDraw.Draw(canvas)
    width = max(1, round(min(canvas.size) / 150))
    for index, grounded in enumerate(boxes):
        color = COLORS[index % len(COLORS)]
        pen.rectangle(grounded.box, outline=color, width=width)
        if grounded.label:
            x, y = grounded.box[0], max(0, grounded.box[1] - LABEL_HEIGHT)
            pen.rectangle((x - 1, y - 1, x + text_width(grounded.label) + 1, y + LABEL_HEIGHT - 1), fill=color)
            draw_text(pen, (x, y), grounded.label, fill="white")
    return canvas
