"""The web demo's tool-use tab: run a template or one tool on the uploaded image, and show every step
with the image it made. Each run gets its own folder (images, provenance.jsonl, steps.jsonl) under the
demo's output folder, so a run's pictures outlive the page.
"""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from PIL import Image

from minigpt.agents.images import ImageStore
from minigpt.agents.model_tools import ModelHandle, model_tools
from minigpt.agents.templates import TemplateError, find_template, shipped_templates
from minigpt.agents.tool import Tool, Toolbox, ToolError


class AgentTab:
    """Tools over the demo's already-loaded model (its model tools share it) plus the classical ones."""

    def __init__(self, tools: list[Tool], out_dir: str | Path, timeout_s: float = 60.0):
        self.tools, self.out_dir, self.timeout_s = tools, Path(out_dir), timeout_s

    @classmethod
    def for_model(cls, model, image_processor, classical: list[Tool], out_dir: str | Path) -> "AgentTab":
        handle = ModelHandle(lambda: (model, image_processor))
        return cls(classical + model_tools(handle, str(model.device)), out_dir)

    def choices(self) -> list[str]:
        """Templates whose tools are all here, then the tools."""
        loaded = {tool.name for tool in self.tools}
        usable = [name for name in shipped_templates() if set(find_template(name).tools) <= loaded]
        return [f"template: {name}" for name in usable] + [f"tool: {tool.name}" for tool in self.tools]

    def run(self, image_path: str | None, choice: str, arguments_text: str) -> tuple[list, str]:
        """-> (the images made, each with its caption; a Markdown list of the steps, or what went wrong)."""
        if not image_path:
            return [], "**Upload an image first.**"
        try:
            arguments = json.loads(arguments_text or "{}")
            if not isinstance(arguments, dict):
                raise ValueError("not an object")
        except ValueError as error:
            return [], f"**The arguments must be a JSON object, e.g. {{\"object\": \"the red car\"}}** ({error})"
        toolbox = Toolbox(self.tools, ImageStore(self.out_dir / f"{datetime.now():%Y%m%d-%H%M%S-%f}"), self.timeout_s)
        try:
            image = Image.open(image_path).convert("RGB")
        except OSError:
            return [], f"**{Path(image_path).name} is not an image this demo can read.**"
        arguments = {"image": toolbox.images.add(image, tool="input"), **arguments}
        kind, _, name = choice.partition(": ")
        ending = ""
        try:
            if kind == "template":
                template = find_template(name)
                template.check(toolbox)
                ending = "Output: `" + json.dumps(template.run(toolbox, arguments)) + "`"
            else:
                observation = toolbox.call(name, arguments)
                ending = "" if observation.ok else "Stopped."
        except (TemplateError, ToolError) as error:
            ending = f"**Stopped:** {error}"
        return gallery(toolbox), steps_markdown(toolbox) + "\n\n" + ending


def gallery(toolbox: Toolbox) -> list[tuple[str, str]]:
    """Every image of the run, with the tool that made it."""
    return [(str(toolbox.images.path(handle)), f"{handle}: {toolbox.images.provenance[handle].tool}")
            for handle in toolbox.images.handles]


def steps_markdown(toolbox: Toolbox) -> str:
    lines = []
    for index, step in enumerate(toolbox.history):
        shown = json.dumps(step.result) if step.ok else f"error: {step.error}"
        lines.append(f"{index + 1}. `{step.tool}({json.dumps(step.arguments)})` -> {shown}")
    return "\n".join(lines) or "No tool ran."
