"""Image to paragraph: a global caption, regions with phrases and boxes (each captioned from its crop),
and colour segments, gathered into facts and written as one paragraph.

Every stage calls the agent's tools through a Toolbox (so every call is checked and logged in
steps.jsonl): `caption` for the caption; `grounding`, then `crop` and `caption` per region, for the
regions; the classical `color_segments` for the segments. A stage can be turned off, and runs on the
device its tools were built for. A stage that fails stops the run with a StageError naming it, or,
with `missing_ok`, is reported as missing; a stage that finds nothing says so ("empty") and adds no
fact. A plain image (one colour) is described as plain without asking any stage, so nothing is
invented about an empty picture.
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from minigpt.agents.classical import classical_tools, color_name
from minigpt.paragraph.facts import STAGES, Fact, caption_facts, merge_facts, region_facts, segment_facts
from minigpt.agents.images import ImageStore
from minigpt.agents.tool import Tool, Toolbox
from minigpt.paragraph.writers import TemplateWriter, Writer, WriterError
from minigpt.common.errors import InputError
from minigpt.conversation.boxes import box_tokens

PLAIN_STD = 2.0  # an image whose every channel varies less than this (0-255) is plain
CROP_PAD = 2  # pixels around a region's box when it is cropped for its caption


class StageError(RuntimeError):
    """A stage failed; the run stops (unless missing stages were allowed)."""

    def __init__(self, stage: str, message: str):
        super().__init__(f"stage {stage!r} failed: {message}")
        self.stage = stage


class ImageReadError(InputError):
    """The input is not an image that can be read."""


@dataclass
class ParagraphOptions:
    stages: tuple[str, ...] = STAGES  # which of caption, regions, segments run
    region_captions: bool = True  # caption each region from its crop
    missing_ok: bool = False  # a failed stage is reported as missing instead of stopping the run
    plain_check: bool = True  # describe a one-colour image as plain without asking the stages
    max_side: int = 1024  # larger images are scaled down first
    fallback_to_template: bool = False  # the template writer writes when the chosen writer fails
    timeout_s: float = 120.0  # per tool call


@dataclass
class StageReport:
    status: str  # ok | empty | off | missing | skipped
    seconds: float = 0.0
    found: int = 0
    error: str | None = None


@dataclass
class StageOutputs:
    """What the stages found, before any writing; `write_paragraph` turns any subset into a paragraph."""

    caption: str | None = None
    regions: list[Fact] = field(default_factory=list)
    segments: list[Fact] = field(default_factory=list)
    width: int = 0
    height: int = 0
    plain: str | None = None  # the colour of a plain image


@dataclass
class ParagraphResult:
    paragraph: str
    grounded: str  # the paragraph with each object's phrase followed by its box, {<x1><y1><x2><y2>}
    facts: list[Fact]
    stages: dict[str, StageReport]
    writer: str
    outputs: StageOutputs
    images: dict[str, str] = field(default_factory=dict)  # input / segments -> image handle
    store: ImageStore | None = None  # where those images are (describe sets it)

    def as_dict(self) -> dict:
        return {"paragraph": self.paragraph, "grounded": self.grounded, "writer": self.writer,
                "caption": self.outputs.caption, "facts": [fact.as_dict() for fact in self.facts],
                "stages": {name: asdict(report) for name, report in self.stages.items()}}


def load_image(source: str | Path | Image.Image | np.ndarray, max_side: int) -> np.ndarray:
    """RGB uint8 [H, W, 3], no side over `max_side`. A large JPEG is decoded at reduced size (draft),
    so a huge photo never has to fit in memory at full size."""
    if isinstance(source, np.ndarray):
        image = Image.fromarray(source)
    elif isinstance(source, Image.Image):
        image = source
    else:
        try:
            with Image.open(source) as opened:
                opened.draft("RGB", (max_side, max_side))  # JPEG only: decode at 1/2, 1/4 or 1/8 scale
                opened.load()
                image = opened.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise ImageReadError(f"{source}: not an image that can be read ({type(error).__name__}: {error})") from None
    image = image.convert("RGB")
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.asarray(image).copy()


def padded_box(box: list[int], width: int, height: int) -> list[int]:
    """A region's box with CROP_PAD pixels around it, inside the image: what its caption is asked about."""
    x1, y1, x2, y2 = box
    return [max(0, x1 - CROP_PAD), max(0, y1 - CROP_PAD), min(width, x2 + CROP_PAD), min(height, y2 + CROP_PAD)]


def plain_color(image: np.ndarray) -> str | None:
    """The colour name of an image with no visible structure, else None."""
    if image.reshape(-1, 3).std(axis=0).max() >= PLAIN_STD:
        return None
    return color_name(image.reshape(-1, 3).mean(axis=0).round())


def grounded_paragraph(paragraph: str, facts: list[Fact], width: int, height: int) -> str:
    """Each fact with a box marks the first unmarked mention of its noun phrase (or its object word):
    "There is a <p>large red circle</p> {<3><4><40><41>} at the top left." """
    marked = paragraph
    for fact in facts:
        if fact.box is None:
            continue
        tokens = box_tokens(*fact.box, width, height)
        for words in (fact.noun_phrase, fact.object):
            pattern = re.compile(rf"(?<!<p>)\b{re.escape(words)}\b(?![^<]*</p>)", re.IGNORECASE)
            match = pattern.search(marked)
            if match:
                marked = f"{marked[:match.start()]}<p>{match.group(0)}</p> {tokens}{marked[match.end():]}"
                break
    return marked


def paragraph_stage_tools(model_tools_on: Callable[[str], list[Tool]] | None,
                          devices: dict[str, str] | None = None) -> dict[str, list[Tool]]:
    """Each stage's tools. The model stages take theirs from `model_tools_on(device)`, called once per
    distinct device (one model each); without it only the segments stage has tools. Segments run on the CPU."""
    devices = devices or {}
    if devices.get("segments", "cpu") != "cpu":
        raise ValueError(f"the segments stage is classical and runs on the CPU, not {devices['segments']!r}")
    classical = {tool.name: tool for tool in classical_tools()}
    stage_tools = {"segments": [classical["color_segments"]]}
    if model_tools_on is not None:
        on_device: dict[str, dict[str, Tool]] = {}
        for stage in ("caption", "regions"):
            device = devices.get(stage, "cpu")
            if device not in on_device:
                on_device[device] = {tool.name: tool for tool in model_tools_on(device)}
            tools = on_device[device]
            stage_tools[stage] = ([tools["caption"]] if stage == "caption"
                                  else [tools["grounding"], classical["crop"], tools["caption"]])
    return stage_tools


class ParagraphPipeline:
    """`stage_tools` maps a stage to the tools it calls: caption -> [caption]; regions -> [grounding,
    crop, caption]; segments -> [color_segments]. Build each stage's tools on the device it should use."""

    def __init__(self, stage_tools: dict[str, list[Tool]], writer: Writer | None = None,
                 options: ParagraphOptions | None = None):
        self.stage_tools, self.writer = stage_tools, writer or TemplateWriter()
        self.options = options or ParagraphOptions()
        unknown = [stage for stage in self.options.stages if stage not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage {unknown[0]!r} (stages: {', '.join(STAGES)})")
        missing = [stage for stage in self.options.stages if stage not in stage_tools]
        if missing:
            raise ValueError(f"stage {missing[0]!r} is on but has no tools (turn it off, or give it its tools)")

    def describe(self, image, folder: str | Path) -> ParagraphResult:
        """Run the stages on one image (a path, PIL image or RGB array), keeping every image and tool call
        in `folder`, and write the paragraph."""
        store = ImageStore(folder)
        pixels = load_image(image, self.options.max_side)
        outputs, reports, handles = self.gather(pixels, store)
        result = self.write(outputs, reports, handles, self.options.stages, pixels)
        result.store = store
        return result

    def gather(self, pixels: np.ndarray, store: ImageStore) -> tuple[StageOutputs, dict[str, StageReport], dict]:
        """Run the stages that are on: -> (what they found, a report per stage, image handles)."""
        handle = store.add(pixels, tool="input")
        height, width = pixels.shape[:2]
        outputs, handles = StageOutputs(width=width, height=height), {"input": handle}
        plain = plain_color(pixels) if self.options.plain_check else None
        reports = {stage: StageReport("off") for stage in STAGES}
        if plain is not None:
            outputs.plain = plain
            for stage in self.options.stages:
                reports[stage] = StageReport("skipped", error=f"the image is plain {plain}")
            return outputs, reports, handles
        toolboxes = {stage: Toolbox(tools, store, self.options.timeout_s) for stage, tools in self.stage_tools.items()}
        work: dict[str, Callable[[Toolbox], int]] = {
            "caption": lambda box: self._caption(box, handle, outputs),
            "regions": lambda box: self._regions(box, handle, outputs),
            "segments": lambda box: self._segments(box, handle, outputs, handles)}
        for stage in self.options.stages:
            reports[stage] = self._run(stage, lambda: work[stage](toolboxes[stage]))
        return outputs, reports, handles

    def _run(self, stage: str, work: Callable[[], int]) -> StageReport:
        start = time.perf_counter()
        try:
            found = work()
        except StageError as error:
            if not self.options.missing_ok:
                raise
            return StageReport("missing", round(time.perf_counter() - start, 3), error=str(error))
        return StageReport("ok" if found else "empty", round(time.perf_counter() - start, 3), found)

    @staticmethod
    def _call(toolbox: Toolbox, stage: str, tool: str, arguments: dict) -> dict:
        observation = toolbox.call(tool, arguments)
        if not observation.ok:
            raise StageError(stage, observation.error)
        return observation.result

    def _caption(self, toolbox: Toolbox, handle: str, outputs: StageOutputs) -> int:
        text = self._call(toolbox, "caption", "caption", {"image": handle})["text"].strip()
        if not text:
            raise StageError("caption", "the captioner answered nothing")
        outputs.caption = text
        return 1

    def _regions(self, toolbox: Toolbox, handle: str, outputs: StageOutputs) -> int:
        objects = self._call(toolbox, "regions", "grounding", {"image": handle})["objects"]
        details = []
        for found in objects if self.options.region_captions else []:
            box = padded_box(found["box"], outputs.width, outputs.height)
            if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                details.append(None)
                continue
            crop = self._call(toolbox, "regions", "crop", {"image": handle, "box": box})["image"]
            details.append(self._call(toolbox, "regions", "caption", {"image": crop})["text"].strip() or None)
        outputs.regions = region_facts(objects, outputs.width, outputs.height, details or None)
        return len(outputs.regions)

    def _segments(self, toolbox: Toolbox, handle: str, outputs: StageOutputs, handles: dict) -> int:
        result = self._call(toolbox, "segments", "color_segments", {"image": handle})
        handles["segments"] = result["image"]
        outputs.segments = segment_facts(result["segments"])
        return len(outputs.segments)

    def write(self, outputs: StageOutputs, reports: dict[str, StageReport], handles: dict, stages: tuple[str, ...],
              pixels: np.ndarray) -> ParagraphResult:
        """The paragraph from the outputs of `stages` only (the others as if turned off)."""
        paragraph, grounded, facts, writer = write_paragraph(outputs, stages, self.writer, pixels,
                                                             self.options.fallback_to_template)
        return ParagraphResult(paragraph, grounded, facts, reports, writer, outputs, handles)


def write_paragraph(outputs: StageOutputs, stages: tuple[str, ...], writer: Writer, pixels: np.ndarray,
                    fallback_to_template: bool = False) -> tuple[str, str, list[Fact], str]:
    """(paragraph, grounded paragraph, facts, writer name) from what `stages` found."""
    if outputs.plain is not None:
        paragraph = f"The image is plain {outputs.plain}, with no distinct object in it."
        return paragraph, paragraph, [], "none"
    caption = outputs.caption if "caption" in stages else None
    found = [*(outputs.regions if "regions" in stages else []), *(outputs.segments if "segments" in stages else []),
             *(caption_facts(caption) if caption else [])]
    facts = merge_facts([Fact(**fact.as_dict()) for fact in found])  # copies: merging edits them
    name = writer.name
    try:
        paragraph = writer.write(facts, caption, pixels)
    except WriterError as error:
        if not fallback_to_template:
            raise
        paragraph, name = TemplateWriter().write(facts, caption, pixels), f"template (fallback: {error})"
    return paragraph, grounded_paragraph(paragraph, facts, outputs.width, outputs.height), facts, name
