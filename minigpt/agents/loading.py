"""Which tools an agent has, where each runs, and what it costs, decided before anything loads.

`--load "face_detect_cpu,caption_cuda:0"` names tools to load up front, each with its device after the
last underscore (TaskMatrix's form). Devices are checked first; then the estimate of each tool's
memory is printed and the named tools load. Every other tool that can load is still offered and loads
on first use; a tool that cannot load (model tools without a model config) is never offered, so a
planner cannot call it. User tools come from `module.path:factory` import paths: `factory()` returns a
Tool or a list of them (agents/tool.py says what a Tool is).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

from minigpt.agents.classical import classical_tools
from minigpt.agents.images import ImageStore
from minigpt.agents.model_tools import MODEL_TOOL_NAMES, ModelHandle, model_tools
from minigpt.agents.tool import Tool, Toolbox


class AgentConfigError(ValueError):
    """A --load or --user-tools request that cannot be met: nothing has been loaded yet."""


@dataclass
class ToolRequest:
    name: str
    device: str


def parse_load(spec: str) -> list[ToolRequest]:
    """'face_detect_cpu,caption_cuda:0' -> requests; names may hold underscores, devices may not."""
    requests = []
    for item in (part.strip() for part in spec.split(",")):
        name, separator, device = item.rpartition("_")
        if not item:
            continue
        if not separator or not name or not device:
            raise AgentConfigError(f"--load: {item!r} is not NAME_DEVICE (for example face_detect_cpu or caption_cuda:0)")
        requests.append(ToolRequest(name, device))
    return requests


def check_device(device: str, tool: str) -> None:
    """cpu, cuda or cuda:N with N a visible GPU."""
    kind, _, index = device.partition(":")
    if kind == "cpu" and not index:
        return
    if kind != "cuda" or (index and not index.isdigit()):
        raise AgentConfigError(f"--load: {tool}: device {device!r} is not cpu, cuda or cuda:N")
    visible = torch.cuda.device_count()
    if int(index or 0) >= visible:
        raise AgentConfigError(f"--load: {tool}: {device} asked for, but {visible} GPU(s) are visible")


def user_tools(import_path: str) -> list[Tool]:
    """The tools a user's factory makes (`package.module:function`)."""
    module_name, _, attribute = import_path.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise AgentConfigError(f"--user-tools: cannot import {import_path!r} (module.path:factory): {error}") from None
    made = factory()
    tools = [made] if isinstance(made, Tool) else list(made)
    if not all(isinstance(tool, Tool) for tool in tools):
        raise AgentConfigError(f"--user-tools: {import_path} must return a Tool or a list of Tools")
    return tools


def available_tools(model_loader: Callable[[str], tuple] | None, user_paths: list[str], model_device: str = "cpu",
                    model_memory_mb: int = 0, product_tools: Sequence[Tool] = ()) -> tuple[list[Tool], ModelHandle | None]:
    """Every tool that can load: classical ones, the products built on tools (write_paragraph, passed in by
    the floor above, which builds on these), model ones when there is a model to load, user ones."""
    tools = classical_tools() + list(product_tools)
    handle = None
    if model_loader is not None:
        handle = ModelHandle(lambda: model_loader(model_device), memory_mb=model_memory_mb)
        tools += model_tools(handle, model_device)
    for path in user_paths:
        tools += user_tools(path)
    names = [tool.name for tool in tools]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise AgentConfigError(f"two tools share the name {duplicates[0]!r}; a user tool must pick another")
    return tools, handle


def plan_loading(tools: list[Tool], requests: list[ToolRequest]) -> list[Tool]:
    """Tools with the devices asked for, every request checked before anything loads."""
    by_name = {tool.name: tool for tool in tools}
    model_devices = set()
    for request in requests:
        if request.name not in by_name:
            raise AgentConfigError(f"--load: no tool {request.name!r} can load here (tools: {', '.join(by_name)})")
        check_device(request.device, request.name)
        if request.name in MODEL_TOOL_NAMES:
            model_devices.add(request.device)
        elif request.device != by_name[request.name].device:
            raise AgentConfigError(f"--load: {request.name} runs on {by_name[request.name].device} only")
    if len(model_devices) > 1:
        raise AgentConfigError(f"--load: the model tools share one model, asked on {', '.join(sorted(model_devices))}")
    device = model_devices.pop() if model_devices else None
    return [replace(tool, device=device) if device and tool.name in MODEL_TOOL_NAMES else tool for tool in tools]


def memory_report(tools: list[Tool], requests: list[ToolRequest]) -> list[str]:
    """One line per tool loaded up front: its device and rough memory (model tools share one model)."""
    asked = {request.name for request in requests}
    return [f"{tool.name} on {tool.device}: about {tool.memory_mb} MB" for tool in tools if tool.name in asked]


def build_toolbox(folder, load_spec: str = "", model_loader: Callable[[str], tuple] | None = None,
                  user_paths: list[str] | None = None, timeout_s: float = 60.0, model_memory_mb: int = 0,
                  print_line: Callable[[str], None] = print,
                  product_tools: Sequence[Tool] = ()) -> tuple[Toolbox, ModelHandle | None]:
    """The agent's toolbox over a new ImageStore in `folder`, the tools named in `load_spec` loaded now,
    and the handle of the model its model tools share (None without a model)."""
    requests = parse_load(load_spec)
    model_device = next((r.device for r in requests if r.name in MODEL_TOOL_NAMES), "cpu")
    tools, handle = available_tools(model_loader, user_paths or [], model_device, model_memory_mb, product_tools)
    tools = plan_loading(tools, requests)
    for line in memory_report(tools, requests):
        print_line(line)
    if handle is not None and any(request.name in MODEL_TOOL_NAMES for request in requests):
        handle.get()
    return Toolbox(tools, ImageStore(folder), timeout_s), handle
