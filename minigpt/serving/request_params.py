"""The parameters of a chat completion request: each one honoured, or refused with a 400 that names it.

    honoured     model (any name answers with the served model), messages, stream, stream_options
                 (include_usage), max_tokens / max_completion_tokens, temperature (0 = greedy), top_p, n
                 (without stream), stop (up to 4 strings), seed, presence_penalty, frequency_penalty,
                 repetition_penalty (vLLM's extension), tools, tool_choice, user (recorded by OpenAI for
                 abuse monitoring; nothing to do here)
    accepted at their no-op value only
                 logprobs: false, top_logprobs: 0, logit_bias: {}, response_format: {type: text},
                 parallel_tool_calls: true
    anything else
                 400, naming the parameter

A client that sends a parameter we do not implement learns so, instead of getting an answer that quietly
ignored it.
"""
from __future__ import annotations

from dataclasses import dataclass

from minigpt.inference.chat import GenerationOptions

HONOURED = {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
            "top_p", "n", "stop", "seed", "presence_penalty", "frequency_penalty", "repetition_penalty", "tools",
            "tool_choice", "user"}
NO_OP_VALUES = {"logprobs": (False, None), "top_logprobs": (0, None), "logit_bias": ({}, None),
                "response_format": ({"type": "text"}, None), "parallel_tool_calls": (True, None)}
MAX_STOP_STRINGS = 4


class ParameterError(ValueError):
    """A request parameter we cannot honour; `param` names it."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


@dataclass
class RequestParams:
    """What a request asks of the generation, checked."""
    options: GenerationOptions
    n: int = 1
    seed: int | None = None
    include_usage: bool = False


def _number(body: dict, name: str, low: float, high: float, default):
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ParameterError(f"'{name}' must be a number from {low} to {high}", name)
    return value


def _integer(body: dict, name: str, low: int, high: int, default):
    value = _number(body, name, low, high, default)
    if value is not None and value != int(value):
        raise ParameterError(f"'{name}' must be a whole number", name)
    return None if value is None else int(value)


def _stop_strings(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    stop = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > MAX_STOP_STRINGS or not all(isinstance(s, str) and s for s in stop):
        raise ParameterError(f"'stop' is a non-empty string or a list of up to {MAX_STOP_STRINGS} of them", "stop")
    return tuple(stop)


def check_known(body: dict) -> None:
    """Refuse every parameter we would otherwise ignore."""
    for name, value in body.items():
        if name in HONOURED:
            continue
        if name in NO_OP_VALUES:
            if value not in NO_OP_VALUES[name]:
                raise ParameterError(f"'{name}' is not supported by this server (only {NO_OP_VALUES[name][0]!r})", name)
            continue
        raise ParameterError(f"'{name}' is not supported by this server", name)


def read_params(body: dict) -> RequestParams:
    """The request's generation settings (ParameterError naming the first one we cannot honour)."""
    check_known(body)
    max_tokens = _integer(body, "max_completion_tokens", 1, 4096, None) or _integer(body, "max_tokens", 1, 4096, 300)
    temperature = _number(body, "temperature", 0, 2, 1.0)
    n = _integer(body, "n", 1, 8, 1)
    if n > 1 and body.get("stream"):
        raise ParameterError("n > 1 is not supported with stream", "n")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict) or set(stream_options) - {"include_usage"}:
        raise ParameterError("stream_options supports include_usage only", "stream_options")
    if stream_options and not body.get("stream"):
        raise ParameterError("stream_options needs stream: true", "stream_options")
    options = GenerationOptions(
        max_new_tokens=max_tokens, temperature=max(temperature, 1e-5), top_p=_number(body, "top_p", 0, 1, 1.0),
        repetition_penalty=_number(body, "repetition_penalty", 0.5, 2, 1.0), do_sample=temperature > 0,
        presence_penalty=_number(body, "presence_penalty", -2, 2, 0.0),
        frequency_penalty=_number(body, "frequency_penalty", -2, 2, 0.0), stop=_stop_strings(body))
    return RequestParams(options, n=n, seed=_integer(body, "seed", -2**63, 2**63 - 1, None),
                         include_usage=bool(stream_options.get("include_usage")))
