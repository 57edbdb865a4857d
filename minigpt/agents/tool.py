"""A tool: a name, a description, JSON-Schema arguments and result, a device and a rough memory cost.

Tools take and give images by handle (agents/images.py) and boxes as pixel [x1, y1, x2, y2]. A
`Toolbox` validates arguments against the schema before a tool runs, runs it under a timeout, and
turns every failure into an `Observation` with a message the planner can act on: a tool that raises,
hangs or is called wrongly never ends the conversation.
"""
from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from minigpt.agents.images import HANDLE_PATTERN, ImageStore, UnknownImageError
from minigpt.common.errors import MissingExtraError, optional_module

jsonschema = optional_module("jsonschema")  # the agents extra

IMAGE = {"type": "string", "pattern": HANDLE_PATTERN, "description": "an image handle, e.g. img_0"}
BOX = {"type": "array", "items": {"type": "integer"}, "minItems": 4, "maxItems": 4,
       "description": "a box in pixels: [x1, y1, x2, y2]"}
BOXES = {"type": "array", "items": BOX}
IMAGE_RESULT = {"type": "object", "properties": {"image": IMAGE}, "required": ["image"]}


def schema_error(value, schema: dict):
    """jsonschema's ValidationError (its `message`, its `absolute_path`) where `value` does not fit `schema`,
    else None."""
    if jsonschema is None:
        raise MissingExtraError("checking tool arguments", "jsonschema", "agents")
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as error:
        return error
    return None


class ToolError(ValueError):
    """A tool's own refusal (a box outside the image, nothing found to work on): told to the planner."""


@dataclass
class ToolContext:
    """What a running tool may use: the conversation's images and the device it was loaded on."""

    images: ImageStore
    device: str = "cpu"

    def image(self, handle: str) -> np.ndarray:
        return self.images.get(handle)

    def add_image(self, image, parent: str, tool: str, arguments: dict) -> str:
        return self.images.add(image, parent, tool, arguments)


@dataclass
class Tool:
    name: str
    description: str
    parameters: dict  # JSON Schema of the arguments (an object)
    run: Callable[[ToolContext, dict], dict]
    result: dict = field(default_factory=lambda: {"type": "object"})  # JSON Schema of what run returns
    device: str = "cpu"
    memory_mb: int = 0  # rough peak memory of the tool's weights and work

    def schema(self) -> dict:
        """The tool as OpenAI's tool calling describes a function."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                  "parameters": self.parameters}}


@dataclass
class Observation:
    """What a tool call gave: its result, or an error message (then `ok` is False)."""

    tool: str
    arguments: dict
    result: dict = field(default_factory=dict)
    error: str | None = None
    invalid: bool = False  # the call itself was wrong (unknown tool, arguments against the schema): not run

    @property
    def ok(self) -> bool:
        return self.error is None


def check_box(box: list[int], image: np.ndarray, name: str = "box") -> tuple[int, int, int, int]:
    """A pixel box inside the image with positive area, or a ToolError saying what is wrong with it."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (int(value) for value in box)
    if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
        raise ToolError(f"{name} {list(box)} is not inside the {width}x{height} image with x1 < x2 and y1 < y2")
    return x1, y1, x2, y2


class Toolbox:
    """The tools of one agent, by name, run against one ImageStore."""

    def __init__(self, tools: list[Tool], images: ImageStore, timeout_s: float = 60.0):
        self.tools = {tool.name: tool for tool in tools}
        self.images = images
        self.timeout_s = timeout_s
        self.history: list[Observation] = []

    def schemas(self) -> list[dict]:
        return [tool.schema() for tool in self.tools.values()]

    def call(self, name: str, arguments: dict) -> Observation:
        """Run one call and keep it: in `history`, and as a line of steps.jsonl in the images' folder."""
        observation = self._call(name, arguments)
        self.history.append(observation)
        self.log(asdict(observation))
        return observation

    def log(self, entry: dict) -> None:
        """One line of steps.jsonl: a call, or how a run that called the tools ended (agents/loop.py)."""
        with open(self.images.folder / "steps.jsonl", "a") as log:
            log.write(json.dumps(entry, default=str) + "\n")

    def _call(self, name: str, arguments: dict) -> Observation:
        """Validate, run under the timeout, check the result; every failure becomes the error message."""
        if name not in self.tools:
            return Observation(name, arguments, error=f"unknown tool {name!r} (tools: {', '.join(self.tools)})",
                               invalid=True)
        tool = self.tools[name]
        if not isinstance(arguments, dict):
            return Observation(name, {}, error=f"arguments must be a JSON object, got {type(arguments).__name__}",
                               invalid=True)
        error = schema_error(arguments, tool.parameters)
        if error is not None:
            where = "/".join(str(part) for part in error.absolute_path) or "arguments"
            return Observation(name, arguments, error=f"invalid arguments for {name}: {where}: {error.message}",
                               invalid=True)
        outcome = run_with_timeout(lambda: tool.run(ToolContext(self.images, tool.device), arguments), self.timeout_s)
        if "error" in outcome:
            return Observation(name, arguments, error=describe_failure(name, outcome["error"]))
        error = schema_error(outcome["result"], tool.result)
        if error is not None:
            return Observation(name, arguments, error=f"{name} returned a malformed result: {error.message}")
        return Observation(name, arguments, result=outcome["result"])


def describe_failure(name: str, error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return f"{name} did not finish: {error}"
    if isinstance(error, (ToolError, UnknownImageError)):
        return f"{name}: {error}"
    return f"{name} failed: {type(error).__name__}: {error}"


def run_with_timeout(function: Callable[[], dict], timeout_s: float) -> dict:
    """{"result": ...} or {"error": exception}. A tool still running at the timeout is left behind in a
    daemon thread (Python cannot stop it) and reported as timed out."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["result"] = function()
        except Exception as error:  # any tool failure is an observation for the planner
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return {"error": TimeoutError(f"timed out after {timeout_s:g} s")}
    return outcome
