"""The agent loop: a planner proposes tool calls, the toolbox runs them, the results go back, until the
planner answers in words, with every way of going wrong bounded.

- at most `max_steps` planner turns; at the limit the planner is asked for an answer without tools,
  and if it still gives none, the answer says where the run stopped;
- a call that cannot be read, names an unknown tool or breaks its schema is returned to the planner as
  an error (a `tool` message) and counts against `max_invalid` consecutive retries;
- a tool that raises or hangs is an observation (agents/tool.py);
- a conversation that outgrows the planner's context (ContextFullError) ends the tool calls: the planner
  is asked for an answer from what it has, its oldest calls and their results left out until that fits
  (the request and the last turn always stay), and the answer says that the run stopped for lack of context;
- any other exception of a planner turn (an unreachable endpoint, a bug) ends the run with a stop reason
  that names it: a planner turn never ends the program, nor a tool evaluation over many requests.

Every stop is a line of steps.jsonl ({"stopped": why, "dropped": tool results left out, ...}), and the
conversation's images stay in their folder whatever happens.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from minigpt.agents.planners import ContextFullError, PlannerReply
from minigpt.agents.tool import Observation, Toolbox
from minigpt.conversation.tool_calls import format_tool_call

ANSWER_NOW = "Answer now in words, without calling a tool."
CONTEXT_FULL = "the conversation outgrew the planner's context"


@dataclass
class AgentResult:
    answer: str
    steps: list[Observation] = field(default_factory=list)
    stopped: str | None = None  # why the run ended without the planner's own answer
    messages: list[dict] = field(default_factory=list)  # the whole conversation, whatever the planner last saw
    error: str | None = None  # "Type: message" of the last exception a planner turn raised (context full included)
    dropped: int = 0  # tool results left out of the conversation so that the final answer fit


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
        except ContextFullError as error:
            result.error = named(error)
            return _final(planner, toolbox, result, CONTEXT_FULL)
        except Exception as error:  # whatever a planner turn raises is a stop reason, named, never a crash
            result.error = named(error)
            return _stopped(toolbox, result, f"the planner failed: {result.error}")
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
    """Ask for an answer without tools; keep what the planner says, or say where the run stopped. An
    answer given after the context ran out says so, as the planner did not see the whole run."""
    result.messages.append({"role": "user", "content": ANSWER_NOW})
    try:
        reply = _answer_that_fits(planner, toolbox, result)
    except ContextFullError as error:
        result.error = named(error)
        return _stopped(toolbox, result, _then(why, f"{CONTEXT_FULL}, even with only the request and the last turn"))
    except Exception as error:  # as in run_agent: named, never a crash
        result.error = named(error)
        return _stopped(toolbox, result, f"{why}; then the planner failed: {result.error}")
    if result.error:
        why = _then(why, CONTEXT_FULL)
    if not reply.content or reply.calls:
        return _stopped(toolbox, result, why)
    note = f" (Stopped: {why}{_left_out(result)}.)" if result.error else ""
    return _end(toolbox, result, why, reply.content + note)


def _answer_that_fits(planner, toolbox: Toolbox, result: AgentResult) -> PlannerReply:
    """The planner's answer without tools, asked with the whole conversation, then, while that does not
    fit its context, with its oldest turns left out one more at a time (`result.dropped` counts the tool
    results left out). ContextFullError when even the request and the last turn do not fit."""
    messages, turns_left_out = result.messages, 0
    while True:  # each pass leaves out one more turn, until none is left to leave out
        try:
            return planner.next(messages, toolbox.schemas(), force_answer=True)
        except ContextFullError as error:
            result.error, turns_left_out = named(error), turns_left_out + 1
            shorter = without_oldest_turns(result.messages, turns_left_out)
            if shorter is None:
                raise
            messages, result.dropped = shorter


def without_oldest_turns(messages: list[dict], count: int) -> tuple[list[dict], int] | None:
    """The conversation (system text, request, the planner's turns, the closing question) with its `count`
    oldest turns (a call with its results and notes) replaced by one note, and how many tool results that
    left out; None when no turn would be left, as the last results are what an answer needs most."""
    head, turns, closing = messages[:2], planner_turns(messages[2:-1]), messages[-1:]
    if count >= len(turns):
        return None
    left_out = sum(message["role"] == "tool" for turn in turns[:count] for message in turn)
    note = {"role": "user", "content": f"({earlier_results(left_out)} left out for lack of context.)"}
    return head + [note] + [message for turn in turns[count:] for message in turn] + closing, left_out


def planner_turns(messages: list[dict]) -> list[list[dict]]:
    """Messages grouped by planner turn: each assistant message with the tool results and notes after it
    (dropped together, as an endpoint refuses a tool result without its call)."""
    turns: list[list[dict]] = []
    for message in messages:
        if message["role"] == "assistant" or not turns:
            turns.append([])
        turns[-1].append(message)
    return turns


def _stopped(toolbox: Toolbox, result: AgentResult, why: str) -> AgentResult:
    done = [f"{step.tool} -> {'ok' if step.ok else 'error'}" for step in result.steps]
    return _end(toolbox, result, why, f"Stopped: {why}{_left_out(result)}. Steps: {', '.join(done) or 'none'}.")


def _end(toolbox: Toolbox, result: AgentResult, why: str, answer: str) -> AgentResult:
    """The run's answer and stop reason, the stop also a line of steps.jsonl."""
    result.answer, result.stopped = answer, why
    toolbox.log({"stopped": why, "dropped": result.dropped, **({"error": result.error} if result.error else {})})
    return result


def _left_out(result: AgentResult) -> str:
    return f"; {earlier_results(result.dropped)} left out" if result.dropped else ""


def earlier_results(count: int) -> str:
    return f"{count} earlier tool result" + ("" if count == 1 else "s")


def _then(why: str, more: str) -> str:
    """A stop reason and what happened after it, said once when both are the same."""
    return more if more.startswith(why) else f"{why}; then {more}"


def named(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"
