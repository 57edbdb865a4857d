"""Tool calling in the OpenAI-compatible API: `tools`, `tool_choice`, assistant `tool_calls` and
`role: "tool"` messages, mapped onto the text form our model is trained to write
(conversation/tool_calls.py).

The offered tools are named in the first user turn ("Tools: a, b"); an assistant's earlier calls are
written back in the text form, and each tool message becomes a "Result of NAME: ..." user turn. The
model's reply is read for calls: calls of offered tools come back as `tool_calls` with
`finish_reason: "tool_calls"`. `tool_choice` "required" or a named tool starts the answer with the
opening of a call (and the name), so the model can only complete a call; "none" offers no tools.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from minigpt.conversation.tool_calls import OPEN, ToolCall, format_tool_call, parse_tool_calls
from minigpt.serving.request_params import ParameterError


class ToolRequestError(ParameterError):
    """A malformed `tools`, `tool_choice` or tool message, with the request parameter at fault."""


@dataclass
class ToolSetup:
    names: list[str] = field(default_factory=list)  # the tools offered to the model
    choice: str = "none"  # none | auto | required | the name of the one tool it must call

    @property
    def active(self) -> bool:
        return bool(self.names) and self.choice != "none"

    def answer_prefix(self) -> str:
        """What the answer must start with: the opening of a call, and its name when one is forced."""
        if not self.active or self.choice == "auto":
            return ""
        return OPEN if self.choice == "required" else OPEN + '{"name": "' + self.choice + '", "arguments": '

    def first_turn_suffix(self) -> str:
        return "\nTools: " + ", ".join(self.names) if self.active else ""


def read_tool_setup(body: dict) -> ToolSetup:
    """`tools` and `tool_choice` checked: every tool a function with a name, a choice among the tools."""
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise ToolRequestError("'tools' must be a list of {type: function, function: {name, ...}}", "tools")
    names = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise ToolRequestError("each tool is {type: function, function: {name, description, parameters}}",
                                   f"tools[{index}]")
        names.append(function["name"])
    choice = body.get("tool_choice") or ("auto" if names else "none")
    if isinstance(choice, dict):
        choice = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
        if choice not in names:
            raise ToolRequestError(f"tool_choice names no tool of 'tools' ({', '.join(names) or 'none given'})",
                                   "tool_choice")
    elif choice not in ("none", "auto", "required"):
        raise ToolRequestError("tool_choice is none, auto, required or {type: function, function: {name}}", "tool_choice")
    if choice == "required" and not names:
        raise ToolRequestError("tool_choice 'required' needs 'tools'", "tool_choice")
    return ToolSetup(names, choice)


def assistant_text(message: dict, param: str) -> str:
    """An assistant message's calls in the text form, after its text, as the model would have written them."""
    text = message.get("content") if isinstance(message.get("content"), str) else ""
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") if isinstance(call, dict) else None
        try:
            arguments = json.loads(function.get("arguments") or "{}")
            text += format_tool_call(function["name"], arguments)
        except (AttributeError, KeyError, TypeError, json.JSONDecodeError):
            raise ToolRequestError("a tool call is {id, type: function, function: {name, arguments: JSON text}}",
                                   f"{param}.tool_calls[{index}]") from None
    return text


def call_names(messages: list) -> dict[str, str]:
    """tool_call_id -> tool name, from the assistant messages' calls (a tool message names its call)."""
    names = {}
    for message in messages:
        for call in (message.get("tool_calls") or []) if isinstance(message, dict) else []:
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                names[call.get("id")] = call["function"].get("name", "tool")
    return names


def reply_message(text: str, setup: ToolSetup) -> tuple[dict, str | None]:
    """The assistant message for the model's text, and "tool_calls" as the finish reason when it called
    offered tools (None: the caller decides between stop and length)."""
    if not setup.active:
        return {"role": "assistant", "content": text}, None
    parsed = parse_tool_calls(text)
    calls = [call for call in parsed.calls if call.name in setup.names]
    if not calls:
        return {"role": "assistant", "content": text}, None
    return {"role": "assistant", "content": parsed.content or None, "tool_calls": api_calls(calls)}, "tool_calls"


def api_calls(calls: list[ToolCall]) -> list[dict]:
    return [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
             "function": {"name": call.name, "arguments": json.dumps(call.arguments)}} for call in calls]


def tool_call_deltas(message: dict) -> list[dict]:
    """A reply's streamed deltas: its text, then each call (name first, then its arguments)."""
    deltas = [{"content": message["content"]}] if message.get("content") else []
    for index, call in enumerate(message.get("tool_calls") or []):
        deltas.append({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                       "function": {"name": call["function"]["name"], "arguments": ""}}]})
        deltas.append({"tool_calls": [{"index": index, "function": {"arguments": call["function"]["arguments"]}}]})
    return deltas
