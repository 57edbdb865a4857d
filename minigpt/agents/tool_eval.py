"""How well a planner uses the tools, on tool-use records with known answers (the layout of
dataset/synthetic_tool_use.py): each request runs through the real agent loop on its image, and the
outcome is checked against the scene, not against the reference calls alone.

Reported, as shares of the records: the first call parses and passes its schema, names the right tool,
gives the right arguments; and end-to-end success: for blur / pixelate the target's box changed and
nothing outside it did, for cutout the answer names the target's colour and shape, for count the
answer gives the true number.
"""
from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from minigpt.agents.images import ImageStore
from minigpt.agents.loop import AgentResult, run_agent
from minigpt.agents.planners import PlannerReply
from minigpt.agents.tool import Tool, Toolbox
from minigpt.conversation.boxes import box_iou
from minigpt.conversation.tool_calls import ToolCall

EDIT_KINDS = {"blur": "blur_region", "pixelate": "pixelate_region"}


def succeeded(record: dict, result: AgentResult, images: ImageStore) -> bool:
    """Did the run do what the request asked, judged on the image or the scene? An edit must come from
    the asked tool on the target's box (IoU >= 0.9) and leave every pixel outside that box as it was."""
    target = record["target"]
    if record["kind"] in EDIT_KINDS:
        edits = [step for step in result.steps if step.ok and step.tool == EDIT_KINDS[record["kind"]]]
        if not edits:
            return False
        before, after = images.get("img_0"), images.get(edits[-1].result["image"])
        x1, y1, x2, y2 = target["box"]
        outside = np.ones(before.shape[:2], dtype=bool)
        outside[y1:y2, x1:x2] = False
        on_target = box_iou(edits[-1].arguments["box"], target["box"]) >= 0.9
        return on_target and bool(np.array_equal(before[outside], after[outside]))
    answer = result.answer.lower()
    if record["kind"] == "cutout":
        return target["color"] in answer and target["shape"] in answer
    return record["answer"].lower().rstrip(".") in answer


def first_call_scores(record: dict, result: AgentResult) -> dict[str, bool]:
    expected = record["steps"][0]
    first = result.steps[0] if result.steps else None
    valid = first is not None and not first.invalid
    return {"call_valid": valid, "right_tool": valid and first.tool == expected["name"],
            "right_arguments": valid and first.tool == expected["name"] and first.arguments == expected["arguments"]}


def evaluate_tool_use(make_planner: Callable[[np.ndarray], object], records: list[dict], image_dir: str | Path,
                      tools: list[Tool], work_dir: str | Path, max_steps: int = 6) -> dict[str, float]:
    """Run each record's request with a planner made for its image; -> shares of the records."""
    totals: collections.Counter = collections.Counter()
    by_kind: dict[str, list[bool]] = collections.defaultdict(list)
    for record in records:
        image = np.asarray(Image.open(Path(image_dir) / record["image"]).convert("RGB"))
        toolbox = Toolbox(tools, ImageStore(Path(work_dir) / record["id"]), timeout_s=30)
        toolbox.images.add(image, tool="input")
        result = run_agent(make_planner(image), toolbox, record["request"], max_steps=max_steps)
        for name, ok in first_call_scores(record, result).items():
            totals[name] += ok
        success = succeeded(record, result, toolbox.images)
        totals["success"] += success
        by_kind[record["kind"]].append(success)
    scores = {name: totals[name] / len(records) for name in ("call_valid", "right_tool", "right_arguments", "success")}
    scores.update({f"success_{kind}": sum(values) / len(values) for kind, values in by_kind.items()})
    return scores


class MajorityPlanner:
    """The baseline: the most common first call of the training records (its tool and arguments), then
    the most common second tool on the first box found, then the most common answer."""

    def __init__(self, train_records: list[dict]):
        def most_common(values):
            return collections.Counter(values).most_common(1)[0][0]
        first = most_common((r["steps"][0]["name"], tuple(sorted(r["steps"][0]["arguments"].items()))) for r in train_records)
        self.first = ToolCall(first[0], dict(first[1]))
        self.second = most_common(r["steps"][1]["name"] for r in train_records if len(r["steps"]) > 1)
        self.answer = most_common(r["answer"] for r in train_records)

    def next(self, messages: list[dict], tools: list[dict], force_answer: bool = False) -> PlannerReply:
        results = [m for m in messages if m["role"] == "tool"]
        if force_answer or len(results) >= 2:
            return PlannerReply(self.answer)
        if not results:
            return PlannerReply(calls=[self.first])
        boxes = eval_boxes(results[0]["content"])
        if not boxes:
            return PlannerReply(self.answer)
        return PlannerReply(calls=[ToolCall(self.second, {"image": "img_0", "box": boxes[0]})])


def eval_boxes(content: str) -> list[list[int]]:
    """The boxes of a find_color_regions result message (JSON text; an error message has none)."""
    try:
        return list(json.loads(content).get("boxes", []))
    except (json.JSONDecodeError, AttributeError):
        return []
