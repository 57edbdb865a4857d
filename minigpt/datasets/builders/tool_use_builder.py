"""Tool use: a request, the tool calls that answer it with their real results, and the final answer,
as the turns a model learns to call tools from (dataset/synthetic_tool_use.py writes such files).

A record is {"id", "image", "request", "tools": [names offered], "steps": [{"name", "arguments",
"result"}], "answer"}. Its turns are written by conversation/tool_calls.py, the same functions the
agent's planner and the API use at run time, so training and use never disagree on the form:

    user       Blur the square. (image: img_0)\nTools: face_detect, find_color_regions, ...
    assistant  <tool_call>{"name": "find_color_regions", "arguments": {"image": "img_0", "color": "red"}}</tool_call>
    user       Result of find_color_regions: {"boxes": [[20, 20, 40, 40]], "areas": [400], "count": 1}
    ...
    assistant  Done: img_1.
"""
from __future__ import annotations

import json

from minigpt.common.registry import register_builder
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.conversation.tool_calls import format_tool_call, tool_result_text, tools_line
from minigpt.datasets.annotations import AnnotationError, load_records, require, require_text
from minigpt.datasets.builders.base import AnnotationBuilder


def tool_use_turns(request: str, tools: list[str], steps: list[dict], answer: str) -> list[tuple[str, str]]:
    turns = [(USER, f"{request}\n{tools_line(tools)}" if tools else request)]
    for step in steps:
        turns.append((ASSISTANT, format_tool_call(step["name"], step["arguments"])))
        turns.append((USER, tool_result_text(step["name"], json.dumps(step["result"]))))
    return turns + [(ASSISTANT, answer)]


@register_builder("tool_use")
class ToolUseBuilder(AnnotationBuilder):
    def parse(self, ann_path):
        records = []
        for index, record in enumerate(load_records(ann_path)):
            record_id = str(require(record, "id", ann_path, index))
            steps = require(record, "steps", ann_path, index)
            for number, step in enumerate(steps if isinstance(steps, list) else [None]):
                if not (isinstance(step, dict) and isinstance(step.get("name"), str)
                        and isinstance(step.get("arguments"), dict) and "result" in step):
                    raise AnnotationError(ann_path, index, f"steps[{number}] needs a name, an arguments object and a "
                                                           "result", record_id)
            records.append({"id": record_id, "image": require_text(record, "image", ann_path, index),
                            "turns": tool_use_turns(require_text(record, "request", ann_path, index),
                                                    list(record.get("tools") or []), steps,
                                                    require_text(record, "answer", ann_path, index))})
        return records
