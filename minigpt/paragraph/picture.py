"""The picture of one image-to-paragraph run: the image with the segments outlined and each fact's box
drawn and labelled, beside the paragraph and each stage's status and time."""
from __future__ import annotations

import textwrap

import numpy as np
from PIL import Image, ImageDraw

from minigpt.common.drawing import draw_text
from minigpt.conversation.boxes import GroundedBox, draw_boxes
from minigpt.paragraph.pipeline import ParagraphResult

MIN_SIDE = 384  # small images are scaled up (nearest neighbour) so boxes and labels stay readable
PANEL_WIDTH = 480
LINE_HEIGHT = 17
WRAP = 58  # characters per line of the paragraph


def paragraph_picture(result: ParagraphResult, image: np.ndarray, segments: np.ndarray | None = None) -> Image.Image:
    """`image` is the input as the stages saw it; `segments` the colour_segments outline image, if any."""
    base = Image.fromarray(segments if segments is not None else image)
    scale = max(1.0, MIN_SIDE / min(base.size))
    base = base.resize((round(base.width * scale), round(base.height * scale)), Image.Resampling.NEAREST)
    boxes = [GroundedBox(f"{fact.noun_phrase} ({'+'.join(fact.sources)})", tuple(v * scale for v in fact.box))
             for fact in result.facts if fact.box is not None]
    drawn = draw_boxes(base, boxes)
    lines = textwrap.wrap(result.paragraph, width=WRAP) + [""]
    lines += [f"{name}: {report.status}, {report.seconds:.2f} s" + (f", {report.found} found" if report.found else "")
              for name, report in result.stages.items()]
    lines += [f"writer: {result.writer}"[:WRAP]]
    height = max(drawn.height, LINE_HEIGHT * (len(lines) + 2))
    canvas = Image.new("RGB", (drawn.width + PANEL_WIDTH, height), "white")
    canvas.paste(drawn, (0, 0))
    pen = ImageDraw.Draw(canvas)
    for index, line in enumerate(lines):
        draw_text(pen, (drawn.width + 10, 10 + index * LINE_HEIGHT), line)
    return canvas
