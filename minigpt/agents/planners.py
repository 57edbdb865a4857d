"""Planners: what decides the next tool call. Any OpenAI-compatible endpoint with tool calling (our
own `minigpt serve` included), or our model in-process writing calls in the text form of
conversation/tool_calls.py.

A planner answers `next(messages, tools, force_answer)` with a `PlannerReply`: text, calls, and the
problems of calls it could not make readable. Messages are OpenAI chat messages (system, user,
assistant with tool_calls, tool), so both kinds of planner see one conversation. A planner that cannot
answer raises PlannerError; ContextFullError when the conversation no longer leaves its context room for
a reply, so that the loop can answer from a shorter one (agents/loop.py).
"""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from PIL import Image

from minigpt.inference.chat import GenerationOptions, generate_answers
from minigpt.conversation.collator import collator_for
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.conversation.tool_calls import ToolCall, parse_tool_calls, tool_result_text, tools_line


class PlannerError(RuntimeError):
    """The planner could not be asked (the endpoint is down, or answered something that is not a reply)."""


class ContextFullError(PlannerError):
    """The conversation leaves the planner's context no room for a whole reply. A reply cut short by the
    context would be a broken call, or a call's opening taken for the answer, so the turn is refused instead."""


# How endpoints word a refusal for length: OpenAI's error code, vLLM's and llama.cpp's messages.
CONTEXT_REFUSAL = re.compile(r"context_length_exceeded|maximum context length|exceeds? the (available )?context",
                             re.IGNORECASE)


@dataclass
class PlannerReply:
    content: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class EndpointPlanner:
    """An OpenAI-compatible /chat/completions endpoint with tool calling."""

    def __init__(self, url: str, model: str = "planner", api_key: str = "none", timeout_s: float = 120.0):
        self.url = url.rstrip("/") + ("" if url.rstrip("/").endswith("/chat/completions") else "/chat/completions")
        self.model, self.api_key, self.timeout_s = model, api_key, timeout_s

    def next(self, messages: list[dict], tools: list[dict], force_answer: bool = False) -> PlannerReply:
        body = {"model": self.model, "messages": messages, "temperature": 0}
        if tools:
            body.update(tools=tools, tool_choice="none" if force_answer else "auto")
        request = urllib.request.Request(self.url, json.dumps(body).encode(), method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                answer = json.loads(response.read())
            message = answer["choices"][0]["message"]
        except urllib.error.HTTPError as error:  # before URLError, its parent: the endpoint answered, and said no
            raise refusal(self.url, error) from None
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise PlannerError(f"{self.url}: {error}") from None
        except (json.JSONDecodeError, KeyError, IndexError, TypeError) as error:
            raise PlannerError(f"{self.url}: not a chat completion ({type(error).__name__}: {error})") from None
        return reply_from_message(message)


def refusal(url: str, error: urllib.error.HTTPError) -> PlannerError:
    """An endpoint's error answer as a PlannerError with the endpoint's own words; a refusal for length
    (OpenAI's HTTP 400 with code context_length_exceeded, or a message that says so) as ContextFullError."""
    try:
        body = error.read().decode(errors="replace")
    except OSError:
        body = ""
    try:
        detail = json.loads(body)["error"]["message"]
    except (json.JSONDecodeError, KeyError, TypeError):
        detail = body.strip()[:500]
    kind = ContextFullError if CONTEXT_REFUSAL.search(body) else PlannerError
    return kind(f"{url}: HTTP {error.code}: {detail or error.reason}")


def reply_from_message(message: dict) -> PlannerReply:
    """An OpenAI assistant message as a reply; calls whose arguments are not a JSON object are problems."""
    reply = PlannerReply(message.get("content") or "")
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except json.JSONDecodeError as error:
            reply.problems.append(f"{function.get('name')}: arguments are not JSON ({error.msg})")
            continue
        if not isinstance(arguments, dict) or not isinstance(function.get("name"), str):
            reply.problems.append(f"{function.get('name')}: a call needs a name and an arguments object")
            continue
        reply.calls.append(ToolCall(function["name"], arguments))
    return reply


class ModelPlanner:
    """Our model, asked in-process: the request (with the tool names) and each tool's result are user
    turns, its calls are assistant turns in the text form; it sees the conversation's first image."""

    def __init__(self, model, image_processor, image=None, options: GenerationOptions | None = None):
        self.model, self.collator = model, collator_for(model)
        self.image = image_processor(Image.fromarray(image)) if image is not None else None
        self.options = options or GenerationOptions(max_new_tokens=96)

    def next(self, messages: list[dict], tools: list[dict], force_answer: bool = False) -> PlannerReply:
        turns = model_turns(messages, [] if force_answer else [tool["function"]["name"] for tool in tools])
        sample = {"id": "planner", "image": self.image, "task": None, "turns": turns}
        self.check_room(sample)
        parsed = parse_tool_calls(generate_answers(self.model, self.collator, [sample], self.options)[0])
        return PlannerReply(parsed.content, [] if force_answer else parsed.calls, parsed.problems)

    def check_room(self, sample: dict) -> None:
        """ContextFullError unless the prompt, counted as the model will read it (image tokens included),
        leaves room for a reply of max_new_tokens in the model's max_context_len."""
        prompt = len(self.collator.encode(sample, for_generation=True).input_ids)
        limit, wanted = self.model.max_context_len, self.options.max_new_tokens
        if prompt + wanted > limit:
            raise ContextFullError(f"the conversation takes {prompt} of the model's {limit} tokens "
                                   f"(max_context_len), leaving less than a reply's {wanted}")


def model_turns(messages: list[dict], tool_names: list[str]) -> list[tuple[str, str]]:
    """OpenAI messages as the user / assistant turns the tool-use data trains on (system text dropped)."""
    turns: list[tuple[str, str]] = []
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role == "user" and not turns:
            turns.append((USER, f"{content}\n{tools_line(tool_names)}" if tool_names else content))
        elif role == "assistant":
            turns.append((ASSISTANT, message.get("text_form") or content))
        elif role in ("user", "tool"):
            text = tool_result_text(message.get("name", "tool"), content) if role == "tool" else content
            if turns and turns[-1][0] == USER:  # several results of one turn's calls: one user turn
                turns[-1] = (USER, turns[-1][1] + "\n" + text)
            else:
                turns.append((USER, text))
    return turns
