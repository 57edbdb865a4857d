"""The parameters of a chat completion request: each one honoured, ignored with a warning, or refused
with a 400 that names it.

    honoured     model (any name answers with the served model), messages, stream, stream_options
                 (include_usage), max_tokens / max_completion_tokens, temperature (0 = greedy), top_p, n
                 (without stream), stop (up to 4 strings), seed, presence_penalty, frequency_penalty,
                 tools, tool_choice, user (recorded by OpenAI for abuse monitoring; nothing to do here);
                 vLLM's top_k (0 or -1: off), min_p and repetition_penalty
    accepted at their no-op value only
                 logprobs: false, top_logprobs: 0, logit_bias: {}, response_format: {type: text},
                 parallel_tool_calls: true
    ignored, with a `warning` in the response (IGNORED)
                 vLLM's other sampling and serving extras (min_tokens, ignore_eos, best_of, guided_*,
                 chat_template_kwargs, ...) and OpenAI's request bookkeeping (store, metadata,
                 service_tier, reasoning_effort, ...)
    anything else
                 400, naming the parameter

Clients send some of these unasked: vLLM's benchmark client sends ignore_eos (SGLang's by default),
lmms-eval's OpenAI-compatible model sends reasoning_effort and response_format {type: text} to a model
named o1 / o3 / o4-*. A parameter that would change what a right answer is (logprobs, a JSON
response_format, logit_bias) is refused rather than ignored: the client learns so instead of getting an
answer that quietly is not what it asked for.
"""
from __future__ import annotations

from dataclasses import dataclass

from minigpt.inference.chat import GenerationOptions

HONOURED = {"model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
            "top_p", "top_k", "min_p", "n", "stop", "seed", "presence_penalty", "frequency_penalty",
            "repetition_penalty", "tools", "tool_choice", "user"}
NO_OP_VALUES = {"logprobs": (False, None), "top_logprobs": (0, None), "logit_bias": ({}, None),
                "response_format": ({"type": "text"}, None), "parallel_tool_calls": (True, None)}
VLLM_EXTRAS = ("min_tokens", "ignore_eos", "best_of", "use_beam_search", "length_penalty", "stop_token_ids",
               "include_stop_str_in_output", "skip_special_tokens", "spaces_between_special_tokens",
               "truncate_prompt_tokens", "prompt_logprobs", "allowed_token_ids", "bad_words", "echo",
               "add_generation_prompt", "continue_final_message", "add_special_tokens", "documents", "chat_template",
               "chat_template_kwargs", "mm_processor_kwargs", "guided_json", "guided_regex", "guided_choice",
               "guided_grammar", "guided_decoding_backend", "guided_whitespace_pattern", "structured_outputs",
               "priority", "request_id", "logits_processors", "return_tokens_as_token_ids", "return_token_ids",
               "cache_salt", "kv_transfer_params", "vllm_xargs")
OPENAI_BOOKKEEPING = ("store", "metadata", "service_tier", "reasoning_effort", "modalities", "verbosity",
                      "prompt_cache_key", "safety_identifier", "prediction", "web_search_options")
IGNORED = {**{name: "a vLLM extra this server does not implement" for name in VLLM_EXTRAS},
           **{name: "OpenAI request bookkeeping with no effect here" for name in OPENAI_BOOKKEEPING}}
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
    warnings: tuple[str, ...] = ()  # the parameters ignored, each with why


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


def check_known(body: dict) -> tuple[str, ...]:
    """Refuse every parameter we would otherwise ignore unsaid; -> a warning for each one IGNORED."""
    warnings = []
    for name, value in body.items():
        if name in HONOURED:
            continue
        if name in IGNORED:
            warnings.append(f"'{name}' was ignored: {IGNORED[name]}")
            continue
        if name in NO_OP_VALUES:
            if value not in NO_OP_VALUES[name]:
                raise ParameterError(f"'{name}' is not supported by this server (only {NO_OP_VALUES[name][0]!r})", name)
            continue
        raise ParameterError(f"'{name}' is not supported by this server", name)
    return tuple(warnings)


def read_params(body: dict, default_max_tokens: int = 300) -> RequestParams:
    """The request's generation settings (ParameterError naming the first one we cannot honour)."""
    warnings = check_known(body)
    max_tokens = (_integer(body, "max_completion_tokens", 1, 4096, None)
                  or _integer(body, "max_tokens", 1, 4096, default_max_tokens))
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
        frequency_penalty=_number(body, "frequency_penalty", -2, 2, 0.0), stop=_stop_strings(body),
        top_k=max(_integer(body, "top_k", -1, 2**31 - 1, 0), 0), min_p=_number(body, "min_p", 0, 1, 0.0))
    return RequestParams(options, n=n, seed=_integer(body, "seed", -2**63, 2**63 - 1, None),
                         include_usage=bool(stream_options.get("include_usage")), warnings=warnings)
