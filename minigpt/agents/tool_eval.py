"""How well a planner uses the tools, on tool-use records with known answers (the layout of
dataset/synthetic_tool_use.py): each request runs through the real agent loop on its image, and the
outcome is checked against the scene, not against the reference calls alone.

Reported, as shares of the records: the first call parses and passes its schema, names the right tool,
gives the right arguments; and end-to-end success: for blur / pixelate the asked tool ran on the
target's box and nothing outside it changed, for cutout the cutout ran on the target's box and the
answer names the target's colour (and no other), for count the answer gives the true number.
"""
from __future__ import annotations

import collections
import json
import re
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from minigpt.agents.classical_find import COLOR_NAMES
from minigpt.agents.images import ImageStore
from minigpt.agents.loop import AgentResult, run_agent
from minigpt.agents.planners import PlannerReply
from minigpt.agents.tool import Tool, Toolbox
from minigpt.conversation.boxes import box_iou
from minigpt.conversation.tool_calls import ToolCall

EDIT_KINDS = {"blur": "blur_region", "pixelate": "pixelate_region", "cutout": "cutout"}


def succeeded(record: dict, result: AgentResult, images: ImageStore) -> bool:
    """Did the run do what the request asked, judged on the image or the scene? An edit must come from
    the asked tool on the target's box (IoU >= 0.9); a blur or pixelate must leave every pixel outside
    that box as it was, a cutout's answer must name the target's colour and no other."""
    target = record["target"]
    if record["kind"] not in EDIT_KINDS:
        return record["answer"].lower().rstrip(".") in result.answer.lower()
    edits = [step for step in result.steps if step.ok and step.tool == EDIT_KINDS[record["kind"]]]
    if not edits or box_iou(edits[-1].arguments["box"], target["box"]) < 0.9:
        return False
    if record["kind"] == "cutout":
        return set(re.findall(r"[a-z]+", result.answer.lower())) & set(COLOR_NAMES) == {target["color"]}
    before, after = images.get("img_0"), images.get(edits[-1].result["image"])
    x1, y1, x2, y2 = target["box"]
    outside = np.ones(before.shape[:2], dtype=bool)
    outside[y1:y2, x1:x2] = False
    return bool(np.array_equal(before[outside], after[outside]))


def first_call_scores(record: dict, result: AgentResult) -> dict[str, bool]:
    expected = record["steps"][0]
    first = result.steps[0] if result.steps else None
    valid = first is not None and not first.invalid
    return {"call_valid": valid, "right_tool": valid and first.tool == expected["name"],
            "right_arguments": valid and first.tool == expected["name"] and first.arguments == expected["arguments"]}


def evaluate_tool_use(make_planner: Callable[[np.ndarray], object], records: list[dict], image_dir: str | Path,
                      tools: list[Tool], work_dir: str | Path, max_steps: int = 6) -> dict[str, float]:
    """Run each record's request with a planner made for its image; -> shares of the records, overall and
    per kind (`success_blur`, `right_arguments_blur`, ...): a kind whose request names what the call needs
    (count) scores well without the image, so the image's part shows only per kind. A run that ends in a
    stop reason instead of an exception (agents/loop.py) lets the evaluation go on to the next record."""
    totals: collections.Counter = collections.Counter()
    by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for record in records:
        image = np.asarray(Image.open(Path(image_dir) / record["image"]).convert("RGB"))
        toolbox = Toolbox(tools, ImageStore(Path(work_dir) / record["id"]), timeout_s=30)
        toolbox.images.add(image, tool="input")
        result = run_agent(make_planner(image), toolbox, record["request"], max_steps=max_steps)
        # a run that a planner turn's exception ended (its context full included) failed, whatever it did before
        success = result.error is None and succeeded(record, result, toolbox.images)
        outcome = {**first_call_scores(record, result), "success": success}
        for name, ok in outcome.items():
            totals[name] += ok
            by_kind[record["kind"]][name] += ok
        by_kind[record["kind"]]["records"] += 1
    scores = {name: totals[name] / len(records) for name in ("call_valid", "right_tool", "right_arguments", "success")}
    for kind, counts in by_kind.items():
        scores.update({f"{name}_{kind}": counts[name] / counts["records"] for name in ("success", "right_arguments")})
    return scores


class ScriptedPlanner:
    """A planner that does not look: a fixed first call, then `second` (a tool name, or None) on the first
    box that call's result holds, then a fixed answer. The baselines below are scripted planners."""

    def __init__(self, first: ToolCall, second: str | None, answer: str):
        self.first, self.second, self.answer = first, second, answer

    def next(self, messages: list[dict], tools: list[dict], force_answer: bool = False) -> PlannerReply:
        results = [m for m in messages if m["role"] == "tool"]
        if force_answer or len(results) >= 2:
            return PlannerReply(self.answer)
        if not results:
            return PlannerReply(calls=[self.first])
        boxes = eval_boxes(results[0]["content"])
        if not boxes or self.second is None:
            return PlannerReply(self.answer)
        return PlannerReply(calls=[ToolCall(self.second, {"image": "img_0", "box": boxes[0]})])


class MajorityPlanner(ScriptedPlanner):
    """The best-constant-call baseline: the most common first call of the training records (its tool and
    arguments), then the most common second tool on the first box found, then the most common answer."""

    def __init__(self, train_records: list[dict]):
        def most_common(values):
            return collections.Counter(values).most_common(1)[0][0]
        first = most_common((r["steps"][0]["name"], tuple(sorted(r["steps"][0]["arguments"].items()))) for r in train_records)
        super().__init__(ToolCall(first[0], dict(first[1])),
                         most_common(r["steps"][1]["name"] for r in train_records if len(r["steps"]) > 1),
                         most_common(r["answer"] for r in train_records))


def other_records_planner(record: dict) -> ScriptedPlanner:
    """The right calls for `record`, made on another image: its first call, its second tool on whatever
    box the first call finds here, its answer. Given another record, this is the shuffled-truth control:
    a planner that plans perfectly for the wrong image."""
    steps = record["steps"]
    return ScriptedPlanner(ToolCall(steps[0]["name"], dict(steps[0]["arguments"])),
                           steps[1]["name"] if len(steps) > 1 else None, record["answer"])


def eval_boxes(content: str) -> list[list[int]]:
    """The boxes of a find_color_regions result message (JSON text; an error message has none)."""
    try:
        return list(json.loads(content).get("boxes", []))
    except (json.JSONDecodeError, AttributeError):
        return []
