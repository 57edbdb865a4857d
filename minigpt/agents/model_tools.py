"""Our own model as visual tools: MiniGPT-v2's task modes, each a tool with a schema.

All model tools share one model, loaded on first use (or up front) by a `ModelHandle`. A request goes
through the chat engine with its task identifier, so task adapters are chosen as `model.adapter: auto`
chooses them. Boxes come back both as pixel [x1, y1, x2, y2] of the image asked about and as the
model's own `{<x1><y1><x2><y2>}` text; an answer with no readable box is an error observation.
"""
from __future__ import annotations

import threading
from typing import Callable

from PIL import Image

from minigpt.agents.tool import BOX, BOXES, IMAGE, Tool, ToolContext, ToolError, check_box
from minigpt.conversation.boxes import DELIMITER, box_tokens, parse_boxes
from minigpt.inference.chat import GenerationOptions, generate_answers
from minigpt.conversation.collator import collator_for
from minigpt.conversation.template import USER

TEXT = {"type": "string", "minLength": 1, "maxLength": 2000}
MODEL_TOOL_NAMES = ("caption", "vqa", "refer", "detect", "count", "identify", "grounding")
CAPTION_QUESTION = "Briefly describe this image."  # MiniGPT-v2's [caption] wording
GROUNDING_QUESTION = "describe this image in detail"  # and its [grounding] wording


class ModelHandle:
    """One model for every model tool, loaded once by `load() -> (model, image_processor)`."""

    def __init__(self, load: Callable[[], tuple], options: GenerationOptions | None = None, memory_mb: int = 0):
        self._load, self._loaded, self._lock = load, None, threading.Lock()
        self.options = options or GenerationOptions(max_new_tokens=80)
        self.memory_mb = memory_mb

    def get(self) -> tuple:
        with self._lock:
            if self._loaded is None:
                model, image_processor = self._load()
                self._loaded = (model, image_processor, collator_for(model))
            return self._loaded

    def ask(self, image, task: str | None, question: str) -> str:
        """One question about an RGB array, in the task's mode (None: plain chat)."""
        model, image_processor, collator = self.get()
        sample = {"id": "tool", "image": image_processor(Image.fromarray(image)), "task": task,
                  "turns": [(USER, question)]}
        return generate_answers(model, collator, [sample], self.options)[0].strip()


def _boxes_or_error(answer: str, image) -> list[list[int]]:
    height, width = image.shape[:2]
    parsed = parse_boxes(answer, width, height)
    if not parsed.boxes:
        raise ToolError(f"the model's answer holds no readable box: {answer!r}")
    return [[round(value) for value in box.box] for box in parsed.boxes]


def model_tools(handle: ModelHandle, device: str = "cpu") -> list[Tool]:
    """caption, vqa, refer, detect, count, identify and grounding, sharing `handle`'s model."""
    def tool(name: str, description: str, properties: dict, run, result: dict) -> Tool:
        parameters = {"type": "object", "properties": {"image": IMAGE, **properties},
                      "required": ["image", *properties], "additionalProperties": False}
        return Tool(name, description, parameters, run, {"type": "object", "properties": result,
                                                           "required": list(result)}, device, handle.memory_mb)

    def caption(context: ToolContext, args: dict) -> dict:
        return {"text": handle.ask(context.image(args["image"]), "caption", CAPTION_QUESTION)}

    def vqa(context: ToolContext, args: dict) -> dict:
        return {"answer": handle.ask(context.image(args["image"]), "vqa", args["question"])}

    def refer(context: ToolContext, args: dict) -> dict:
        image = context.image(args["image"])
        answer = handle.ask(image, "refer", f"give me the location of {args['phrase']}")
        box = _boxes_or_error(answer, image)[0]
        return {"box": box, "box_text": box_tokens(*box, image.shape[1], image.shape[0])}

    def detect(context: ToolContext, args: dict) -> dict:
        image = context.image(args["image"])
        boxes = _boxes_or_error(handle.ask(image, "detection", args["phrase"]), image)
        texts = [box_tokens(*box, image.shape[1], image.shape[0]) for box in boxes]
        return {"boxes": boxes, "box_text": DELIMITER.join(texts), "count": len(boxes)}

    def count(context: ToolContext, args: dict) -> dict:
        found = detect(context, {"image": args["image"], "phrase": args["object"]})
        return {"count": found["count"], "boxes": found["boxes"]}

    def identify(context: ToolContext, args: dict) -> dict:
        image = context.image(args["image"])
        x1, y1, x2, y2 = check_box(args["box"], image)
        tokens = box_tokens(x1, y1, x2, y2, image.shape[1], image.shape[0])
        return {"answer": handle.ask(image, "identify", f"what is this {tokens}")}

    def grounding(context: ToolContext, args: dict) -> dict:
        image = context.image(args["image"])
        text = handle.ask(image, "grounding", GROUNDING_QUESTION)
        parsed = parse_boxes(text, image.shape[1], image.shape[0])
        return {"text": text, "objects": [{"phrase": box.label or "", "box": [round(v) for v in box.box]}
                                          for box in parsed.boxes]}

    count_result = {"count": {"type": "integer", "minimum": 0}, "boxes": BOXES}
    return [
        tool("caption", "A short caption of the image.", {}, caption, {"text": {"type": "string"}}),
        tool("vqa", "Answer a question about the image briefly.", {"question": TEXT}, vqa,
             {"answer": {"type": "string"}}),
        tool("refer", "The box of the one object a phrase names.", {"phrase": TEXT}, refer,
             {"box": BOX, "box_text": {"type": "string"}}),
        tool("detect", "The boxes of every object a phrase names.", {"phrase": TEXT}, detect,
             {"boxes": BOXES, "box_text": {"type": "string"}, "count": {"type": "integer"}}),
        tool("count", "How many of an object the image shows (by detecting each).", {"object": TEXT}, count,
             count_result),
        tool("identify", "What the object in a box is.", {"box": BOX}, identify, {"answer": {"type": "string"}}),
        tool("grounding", "A detailed description whose objects carry their boxes.", {}, grounding,
             {"text": {"type": "string"}, "objects": {"type": "array"}}),
    ]
