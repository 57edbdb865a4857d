"""Visual tools on an image: a request planned by a model, a template, or one tool; each step shown.

    minigpt agent --request "blur the faces" --image photo.jpg --planner-url http://localhost:8000/v1
    minigpt agent --request "how many blue shapes are there?" --image shapes.png --cfg-path my_tool_model.yaml
    minigpt agent --template blur_faces --image photo.jpg
    minigpt agent --template remove_object --image street.jpg --arg object="the red car" --cfg-path minigptv2_eval
    minigpt agent --tool find_color_regions --image shapes.png --arg color=red
    minigpt agent --list

A request is planned by any OpenAI-compatible endpoint with tool calling (--planner-url), or else by
the --cfg-path model itself (one trained to write tool calls); the loop is bounded by --max-steps and by
the planner's context, and a run that stops early prints its answer with why it stopped (docs/agents.md).

Model tools (caption, vqa, refer, detect, count, identify, grounding) need --cfg-path: a MiniGPT-v2
chat config. --load "face_detect_cpu,caption_cuda:0" loads tools up front on those devices; the others
load on first use. Images and steps.jsonl go to --out (a new folder under output/agent by default).
"""
from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path

import torch
from PIL import Image

from minigpt.agents.loading import AgentConfigError, build_toolbox
from minigpt.agents.loop import run_agent
from minigpt.agents.planners import EndpointPlanner, ModelPlanner
from minigpt.agents.templates import TemplateError, find_template, offer_templates, shipped_templates
from minigpt.agents.tool import ToolError
from minigpt.cli.options import add_model_arguments, add_toolbox_arguments, toolbox_model_from
from minigpt.common.errors import InputError
from minigpt.paragraph.tool import write_paragraph_tool


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--request", help="what to do, in words: a planner picks the tools")
    what.add_argument("--template", help="a shipped template's name or a template YAML file")
    what.add_argument("--tool", help="one tool to call")
    what.add_argument("--list", action="store_true", help="list the tools and templates that can load, then exit")
    parser.add_argument("--image", help="the image to work on (it becomes img_0)")
    parser.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE",
                        help="an argument of the template or tool (JSON values allowed: box=[10,10,50,50])")
    add_toolbox_arguments(parser)
    parser.add_argument("--planner-url", help="an OpenAI-compatible endpoint (.../v1) that plans --request")
    parser.add_argument("--planner-model", default="planner", help="the model name sent to --planner-url")
    parser.add_argument("--max-steps", type=int, default=6, help="most planner turns for --request")
    parser.add_argument("--out", help="the conversation's folder (default: output/agent/<time>)")
    add_model_arguments(parser)


def parse_arg(text: str) -> tuple[str, object]:
    name, separator, value = text.partition("=")
    if not separator or not name:
        raise InputError(f"--arg {text!r}: expected NAME=VALUE")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value  # plain text, commas and all


def run(args: argparse.Namespace) -> int:
    folder = Path(args.out or f"output/agent/{datetime.now():%Y%m%d-%H%M%S}")
    try:
        loader, memory_mb = toolbox_model_from(args)
        toolbox, handle = build_toolbox(folder, args.load, loader, args.user_tools, args.timeout, memory_mb,
                                        product_tools=[write_paragraph_tool()])
        if args.list:
            for tool in toolbox.tools.values():
                print(f"{tool.name:<20} {tool.device:<7} {tool.description}")
            for name in shipped_templates():
                print(f"{name:<20} template")
            return 0
        if not args.image:
            raise InputError("--image is needed to run a template or a tool")
        try:
            image = Image.open(args.image).convert("RGB")
        except OSError as error:
            raise InputError(f"--image {args.image}: not a readable image ({error})") from None
        arguments = {"image": toolbox.images.add(image, tool="input", arguments={"path": str(args.image)}),
                     **dict(parse_arg(text) for text in args.arg)}
        result = run_flow(args, toolbox, handle, arguments)
    except (AgentConfigError, TemplateError) as error:
        raise InputError(str(error)) from None
    finally:
        torch.cuda.empty_cache()
    for index, observation in enumerate(toolbox.history):
        shown = observation.result if observation.ok else f"error: {observation.error}"
        print(f"step {index}: {observation.tool}({json.dumps(observation.arguments)}) -> {json.dumps(shown)}")
    if result is None:
        return 1
    print(json.dumps(result, indent=1))
    print(f"images and steps.jsonl: {folder}")
    return 0


def run_flow(args: argparse.Namespace, toolbox, handle, arguments: dict) -> dict | None:
    """The planner's answer, the template's output or the tool's result; None when a step failed."""
    if args.request:
        if args.planner_url:  # templates join the tools; a model trained on the tools alone is not shown them
            offer_templates(toolbox)
            planner = EndpointPlanner(args.planner_url, args.planner_model, timeout_s=args.timeout)
        elif handle is not None:
            model, image_processor, _ = handle.get()
            planner = ModelPlanner(model, image_processor, toolbox.images.get(arguments["image"]))
        else:
            raise InputError("--request needs a planner: --planner-url, or --cfg-path with a model trained to call tools")
        outcome = run_agent(planner, toolbox, f"{args.request} (image: {arguments['image']})", args.max_steps)
        return {"answer": outcome.answer, **({"stopped": outcome.stopped} if outcome.stopped else {})}
    if args.tool:
        observation = toolbox.call(args.tool, arguments)
        return observation.result if observation.ok else None
    template = find_template(args.template)
    template.check(toolbox)
    try:
        return template.run(toolbox, arguments)
    except ToolError as error:
        print(f"stopped: {error}")
        return None
