"""Templates: declarative multi-step tool flows in YAML ("remove the dog and fill the hole").

    name: blur_faces
    description: Blur every face in the image.
    inputs: {image: image}                  # name -> image | string | integer | number | box
    steps:
      - id: faces
        tool: face_detect
        args: {image: $image}
      - id: blurred
        tool: blur_region
        for_each: $faces.boxes              # once per item, the item being $item
        chain: image                        # each run works on the image the run before made
        args: {image: $image, box: $item}
    output: {image: $blurred.image, faces: $faces.count}

A value "$name" is an input, "$step.field" a field of an earlier step's result, "$item" (or
"$item.field") the current item of a `for_each`. A `for_each` step's result is {"results": [...]},
plus "image" (the last image made, or the input image when the list was empty) when it chains. A
template is checked against its tools' schemas when it is bound to a toolbox, runs without any LLM,
and is offered to a planner as one more tool.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from minigpt.agents.tool import BOX, IMAGE, Tool, Toolbox, ToolError, schema_error

TEMPLATE_DIR = Path(__file__).parent / "templates"
INPUT_TYPES = {"image": IMAGE, "string": {"type": "string", "minLength": 1}, "integer": {"type": "integer"},
               "number": {"type": "number"}, "box": BOX}


class TemplateError(ValueError):
    """A template that cannot run: named with its file and the step or field at fault."""


@dataclass
class Step:
    id: str
    tool: str
    args: dict
    for_each: str | None = None
    chain: str | None = None


@dataclass
class Template:
    name: str
    description: str
    inputs: dict[str, str]
    steps: list[Step]
    output: dict = field(default_factory=dict)
    source: str = ""

    @property
    def tools(self) -> list[str]:
        return list(dict.fromkeys(step.tool for step in self.steps))

    def parameters(self) -> dict:
        return {"type": "object", "properties": {name: INPUT_TYPES[kind] for name, kind in self.inputs.items()},
                "required": list(self.inputs), "additionalProperties": False}

    def check(self, toolbox: Toolbox) -> None:
        """Every step names a loaded tool and gives it arguments its schema allows; every reference
        points at an input or an earlier step's result field."""
        known: dict[str, dict] = {}
        for step in self.steps:
            where = f"{self.source}: step {step.id!r}"
            if step.tool not in toolbox.tools:
                raise TemplateError(f"{where}: tool {step.tool!r} is not loaded (loaded: {', '.join(toolbox.tools)})")
            tool = toolbox.tools[step.tool]
            properties = tool.parameters.get("properties", {})
            for name, value in step.args.items():
                if name not in properties:
                    raise TemplateError(f"{where}: {step.tool} takes no argument {name!r} (it takes {', '.join(properties)})")
                if isinstance(value, str) and value.startswith("$"):
                    self._check_reference(value, known, step, where)
                else:
                    error = schema_error(value, properties[name])
                    if error is not None:
                        raise TemplateError(f"{where}: argument {name!r}: {error.message}")
            missing = [name for name in tool.parameters.get("required", []) if name not in step.args]
            if missing:
                raise TemplateError(f"{where}: {step.tool} needs {', '.join(missing)}")
            if step.for_each:
                self._check_reference(step.for_each, known, None, where)
            result = tool.result.get("properties", {})
            known[step.id] = {"results": {}, "image": {}} if step.for_each else result
        for name, value in self.output.items():
            self._check_reference(value, known, None, f"{self.source}: output {name!r}")

    def _check_reference(self, value: str, known: dict[str, dict], step: Step | None, where: str) -> None:
        head, _, rest = value[1:].partition(".")
        if head == "item":
            if step is None or not step.for_each:
                raise TemplateError(f"{where}: {value} outside a for_each step")
        elif head in self.inputs:
            if rest:
                raise TemplateError(f"{where}: input {head!r} has no field {rest!r}")
        elif head not in known:
            raise TemplateError(f"{where}: {value} names no input or earlier step (inputs: {', '.join(self.inputs)})")
        elif rest and known[head] and rest.split(".")[0] not in known[head]:
            raise TemplateError(f"{where}: step {head!r} gives no {rest!r} (it gives {', '.join(known[head])})")

    def run(self, toolbox: Toolbox, arguments: dict) -> dict:
        """Run the steps in order; a failing step stops the run with a ToolError naming it."""
        error = schema_error(arguments, self.parameters())
        if error is not None:
            where = "/".join(str(part) for part in error.absolute_path) or "arguments"
            raise TemplateError(f"template {self.name}: {where}: {error.message} (inputs: "
                                f"{', '.join(f'{k} ({v})' for k, v in self.inputs.items())})")
        values: dict = dict(arguments)
        for step in self.steps:
            values[step.id] = self._run_step(step, toolbox, values)
        return {name: resolve(value, values) for name, value in self.output.items()}

    def _run_step(self, step: Step, toolbox: Toolbox, values: dict) -> dict:
        if not step.for_each:
            return self._call(step, toolbox, {name: resolve(v, values) for name, v in step.args.items()})
        results, image = [], None
        for item in resolve(step.for_each, values):
            args = {name: resolve(v, {**values, "item": item}) for name, v in step.args.items()}
            if step.chain and image is not None:
                args[step.chain] = image
            result = self._call(step, toolbox, args)
            results.append(result)
            image = result.get(step.chain) if step.chain else None
        output = {"results": results}
        if step.chain:
            output["image"] = image if image is not None else resolve(step.args[step.chain], values)
        return output

    def _call(self, step: Step, toolbox: Toolbox, args: dict) -> dict:
        observation = toolbox.call(step.tool, args)
        if not observation.ok:
            raise ToolError(f"template {self.name}, step {step.id!r}: {observation.error}")
        return observation.result

    def as_tool(self, toolbox: Toolbox) -> Tool:
        """The template as one more tool for a planner (checked against `toolbox` first)."""
        self.check(toolbox)
        return Tool(self.name, f"{self.description} (template: {' -> '.join(self.tools)})", self.parameters(),
                    lambda context, arguments: self.run(toolbox, arguments))


def resolve(value, values: dict):
    """A "$name.field" reference's value; anything else as it is (mappings and lists element-wise)."""
    if isinstance(value, dict):
        return {key: resolve(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, values) for item in value]
    if not (isinstance(value, str) and value.startswith("$")):
        return value
    head, *fields = value[1:].split(".")
    current = values[head]
    for name in fields:
        current = current[name]
    return current


def load_template(path: str | Path) -> Template:
    """A template file, its layout checked (its tools are checked when it is bound to a toolbox)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise TemplateError(f"{path}: cannot read: {error}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("steps"), list) or not raw["steps"]:
        raise TemplateError(f"{path}: a template is a mapping with a non-empty 'steps' list")
    for name, kind in (raw.get("inputs") or {}).items():
        if kind not in INPUT_TYPES:
            raise TemplateError(f"{path}: input {name!r}: type {kind!r} is not one of {', '.join(INPUT_TYPES)}")
    steps = []
    for index, step in enumerate(raw["steps"]):
        if not isinstance(step, dict) or not {"id", "tool"} <= step.keys():
            raise TemplateError(f"{path}: step {index} needs an 'id' and a 'tool'")
        unknown = set(step) - {"id", "tool", "args", "for_each", "chain"}
        if unknown:
            raise TemplateError(f"{path}: step {step['id']!r}: unknown keys {', '.join(sorted(unknown))}")
        steps.append(Step(str(step["id"]), str(step["tool"]), dict(step.get("args") or {}), step.get("for_each"),
                          step.get("chain")))
    return Template(str(raw.get("name", path.stem)), str(raw.get("description", "")), dict(raw.get("inputs") or {}),
                    steps, dict(raw.get("output") or {}), str(path))


def shipped_templates() -> dict[str, Path]:
    return {path.stem: path for path in sorted(TEMPLATE_DIR.glob("*.yaml"))}


def find_template(name_or_path: str) -> Template:
    """A shipped template by name, or a template file."""
    shipped = shipped_templates()
    if name_or_path in shipped:
        return load_template(shipped[name_or_path])
    if Path(name_or_path).is_file():
        return load_template(name_or_path)
    raise TemplateError(f"no template {name_or_path!r} (shipped: {', '.join(shipped)}; or give a YAML file)")


def offer_templates(toolbox: Toolbox) -> list[str]:
    """Add every shipped template whose tools are all loaded to `toolbox` as one more tool (so a call to
    it is validated, run and logged like any other); -> a line for each template left out, saying why."""
    left_out = []
    for name in shipped_templates():
        if name in toolbox.tools:
            left_out.append(f"template {name} left out: a tool of that name is loaded")
            continue
        try:
            template = find_template(name)
            missing = [tool for tool in template.tools if tool not in toolbox.tools]
            if missing:  # most often model tools, without a model config
                raise TemplateError(f"it needs {', '.join(missing)}, not loaded here")
            toolbox.tools[name] = template.as_tool(toolbox)
        except TemplateError as error:
            left_out.append(f"template {name} left out: {error}")
    return left_out
