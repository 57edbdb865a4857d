"""The agent loop: a planner proposes tool calls, the toolbox runs them, the results go back, until the
planner answers in words, with every way of going wrong bounded.

- at most `max_steps` planner turns; at the limit the planner is asked for an answer without tools,
  and if it still gives none, the answer says where the run stopped;
- a call that cannot be read, names an unknown tool or breaks its schema is returned to the planner as
  an error (a `tool` message) and counts against `max_invalid` consecutive retries;
- a tool that raises or hangs is an observation (agents/tool.py); a planner that cannot be reached
  ends the run with its error. The conversation's images stay in their folder whatever happens.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from minigpt.agents.planners import PlannerError, PlannerReply
from minigpt.agents.tool import Observation, Toolbox
from minigpt.conversation.tool_calls import format_tool_call


@dataclass
class AgentResult:
    answer: str
    steps: list[Observation] = field(default_factory=list)
    stopped: str | None = None  # why the run ended without the planner's own answer
    messages: list[dict] = field(default_factory=list)


def system_text(toolbox: Toolbox) -> str:
    handles = ", ".join(toolbox.images.handles) or "none"
    return ("You can call visual tools. Images are named by handle (" + handles + "); never write a file path. "
            "Boxes are pixel [x1, y1, x2, y2]. Call one tool at a time; answer in words when you are done.")


def run_agent(planner, toolbox: Toolbox, request: str, max_steps: int = 6, max_invalid: int = 2) -> AgentResult:
    messages = [{"role": "system", "content": system_text(toolbox)}, {"role": "user", "content": request}]
    result = AgentResult("", messages=messages)
    invalid = 0
    for step in range(max_steps):
        try:
            reply = planner.next(messages, toolbox.schemas())
        except PlannerError as error:
            return _stopped(result, f"the planner failed: {error}")
        if not reply.calls and not reply.problems:
            result.answer = reply.content
            return result
        failed = _run_calls(reply, toolbox, messages, result, step)
        invalid = invalid + 1 if failed else 0
        if invalid > max_invalid:
            return _final(planner, toolbox, result, f"{invalid} invalid calls in a row")
    return _final(planner, toolbox, result, f"the step limit ({max_steps}) was reached")


def _run_calls(reply: PlannerReply, toolbox: Toolbox, messages: list[dict], result: AgentResult, step: int) -> bool:
    """Run a reply's calls and add them and their results to the messages; True when none was valid."""
    calls = [{"id": f"call_{step}_{index}", "type": "function",
              "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}
             for index, call in enumerate(reply.calls)]
    text_form = "".join(format_tool_call(call.name, call.arguments) for call in reply.calls)
    messages.append({"role": "assistant", "content": reply.content or None, "tool_calls": calls or None,
                     "text_form": text_form or reply.content})
    valid = 0
    for call, message in zip(reply.calls, calls):
        observation = toolbox.call(call.name, call.arguments)
        result.steps.append(observation)
        valid += not observation.invalid
        content = json.dumps(observation.result) if observation.ok else f"error: {observation.error}"
        messages.append({"role": "tool", "tool_call_id": message["id"], "name": call.name, "content": content})
    for problem in reply.problems:
        messages.append({"role": "user", "content": f"Your tool call could not be read: {problem}. Write it again."})
    return valid == 0


def _final(planner, toolbox: Toolbox, result: AgentResult, why: str) -> AgentResult:
    """Ask for an answer without tools; keep what the planner says, or say where the run stopped."""
    result.messages.append({"role": "user", "content": "Answer now in words, without calling a tool."})
    try:
        reply = planner.next(result.messages, toolbox.schemas(), force_answer=True)
    except PlannerError as error:
        return _stopped(result, f"{why}; then the planner failed: {error}")
    if reply.content and not reply.calls:
        result.answer, result.stopped = reply.content, why
        return result
    return _stopped(result, why)


def _stopped(result: AgentResult, why: str) -> AgentResult:
    done = [f"{step.tool} -> {'ok' if step.ok else 'error'}" for step in result.steps]
    result.answer = f"Stopped: {why}. Steps: {', '.join(done) or 'none'}."
    result.stopped = why
    return result
