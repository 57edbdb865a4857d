"""Tool calls written as text, both ways: how a model that has no tool-calling API writes a call.

A call is a JSON object between tags, the arguments an object:

    <tool_call>{"name": "find_color_regions", "arguments": {"image": "img_0", "color": "red"}}</tool_call>

Reading stops after the last well-formed call, so text a model writes after its call (an invented
"Observation: ...", say) is never taken as a tool's result. A call that cannot be read is reported in
`problems`, never raised: a model's malformed output is something to tell it about.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_CALL = re.compile(re.escape(OPEN) + r"(.*?)(?:" + re.escape(CLOSE) + r"|$)", re.DOTALL)


@dataclass
class ToolCall:
    name: str
    arguments: dict


@dataclass
class ParsedReply:
    content: str  # the text before the first call (the whole reply when it makes none)
    calls: list[ToolCall] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def format_tool_call(name: str, arguments: dict) -> str:
    return OPEN + json.dumps({"name": name, "arguments": arguments}, separators=(", ", ": ")) + CLOSE


def parse_tool_calls(text: str) -> ParsedReply:
    """The calls in a model's reply, and what could not be read as one."""
    first = text.find(OPEN)
    if first < 0:
        return ParsedReply(text.strip())
    reply = ParsedReply(text[:first].strip())
    for match in _CALL.finditer(text, first):
        body = match.group(1).strip()
        try:
            call = json.loads(body)
        except json.JSONDecodeError as error:
            reply.problems.append(f"a tool call that is not JSON ({error.msg} at character {error.pos}): {body[:80]!r}")
            continue
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            reply.problems.append(f"a tool call needs a \"name\": {body[:80]!r}")
        elif not isinstance(call.get("arguments", {}), dict):
            reply.problems.append(f"the arguments of {call['name']} must be a JSON object: {body[:80]!r}")
        else:
            reply.calls.append(ToolCall(call["name"], call.get("arguments", {})))
    return reply


def tools_line(names: list[str]) -> str:
    """How a request tells a text-form model which tools it may call."""
    return "Tools: " + ", ".join(names)


def tool_result_text(name: str, result: str) -> str:
    """A tool's result (JSON text, or an error message) as the user turn that follows the call."""
    return f"Result of {name}: {result}"
