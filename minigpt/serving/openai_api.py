"""An OpenAI-compatible `/v1/chat/completions` endpoint over the chat engine (FastAPI).

Existing OpenAI clients talk to a finetuned model unchanged: messages whose content is text or a list of
`text` and `image_url` parts (a `data:` URL, an http(s) URL the server fetches within a size and a time
limit, or a file path under the server's image root), and every generation parameter honoured, ignored
with a warning, or refused by name (request_params.py). Each image of a conversation gets its own slots
in the user turn it came with, as the original chat adds one per upload (up to --max-images). System
messages are accepted and ignored (a template's system text, where it has one, is fixed). Requests that
arrive together are answered in one generation batch (batching.py). A bad request gets a 4xx answer with
an OpenAI-style JSON error that names the parameter, never a crash.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import io
import json
import time
import uuid
from typing import Iterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from minigpt.conversation.generated import GeneratedAnswer
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.conversation.tool_calls import tool_result_text
from minigpt.processors.image import to_rgb
from minigpt.serving.image_urls import ImageURLError, fetch_image_bytes, is_web_url
from minigpt.serving.request_params import ParameterError, read_params
from minigpt.serving.served import RequestError, ServedModel, check_room
from minigpt.serving.text_completions import TextCompletion
from minigpt.serving.tool_calling import (ToolRequestError, ToolSetup, assistant_text, call_names, read_tool_setup,
                                          reply_message, tool_call_deltas)

def read_image(url: str, served: ServedModel, param: str) -> Image.Image:
    """A `data:image/...;base64,` URL, an http(s) URL (image_urls.py) or a file path under the image root ->
    an RGB image."""
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if ";base64" not in header:
            raise RequestError("image data URLs must be base64 encoded (data:image/png;base64,...)", param)
        if len(payload) * 3 // 4 > served.max_image_bytes:
            raise RequestError(f"image is larger than {served.max_image_bytes // 2**20} MB", param, 413)
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError("image data URL is not valid base64", param) from None
        source = io.BytesIO(data)
    elif is_web_url(url):
        try:
            source = io.BytesIO(fetch_image_bytes(url, served.max_image_bytes, served.image_fetch_timeout_s))
        except ImageURLError as error:
            raise RequestError(str(error), param) from None
    elif "://" in url and not url.startswith("file://"):
        raise RequestError("an image URL is http(s), a data URL or a local file path", param)
    else:
        path = (served.image_root / url.removeprefix("file://")).resolve()
        if not path.is_relative_to(served.image_root.resolve()):
            raise RequestError(f"image path is outside the server's image root {served.image_root}", param, 403)
        if not path.is_file():
            raise RequestError(f"no image file at {url}", param, 404)
        if path.stat().st_size > served.max_image_bytes:
            raise RequestError(f"image is larger than {served.max_image_bytes // 2**20} MB", param, 413)
        source = path
    try:
        with Image.open(source) as image:
            image.load()
            return to_rgb(image)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise RequestError(f"not a readable image: {error}", param) from None


def message_text(message: dict, param: str, served: ServedModel, images: list, call_names: dict) -> str:
    """One message's text (its image parts read into `images`); calls and tool results in the text form."""
    if message["role"] == "tool":
        if not isinstance(message.get("content"), str):
            raise RequestError("a tool message's content is the tool's result as text", f"{param}.content")
        return tool_result_text(call_names.get(message.get("tool_call_id"), "tool"), message["content"])
    if message["role"] == "assistant" and message.get("tool_calls"):
        try:
            return assistant_text(message, param)
        except ToolRequestError as error:
            raise RequestError(str(error), error.param) from None
    content = message.get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(parts, list):
        raise RequestError("content must be a string or a list of parts", f"{param}.content")
    texts = []
    for number, part in enumerate(parts):
        part_param = f"{param}.content[{number}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and message["role"] == "user":
            url = part.get("image_url", {}).get("url") if isinstance(part.get("image_url"), dict) else part.get("image_url")
            if not isinstance(url, str):
                raise RequestError("image_url needs a url", f"{part_param}.image_url")
            images.append(read_image(url, served, f"{part_param}.image_url"))
        else:
            raise RequestError("a part is {type: text, text} or, in user messages, {type: image_url, image_url: {url}}",
                               part_param)
    return " ".join(texts)


def parse_messages(messages, served: ServedModel, tools: ToolSetup | None = None
                   ) -> tuple[list[tuple[str, str]], list[Image.Image], list[int]]:
    """OpenAI messages -> (turns ending with the user's question or a tool's result, the conversation's
    images, the user turn of each image). Tool results are user turns; the first user turn names the
    offered tools."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list", "messages")
    turns, images, image_positions, names = [], [], [], call_names(messages)
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ("system", "developer", "user", "assistant", "tool"):
            raise RequestError("each message needs a role: system, user, assistant or tool", f"{param}.role")
        before = len(images)
        text = message_text(message, param, served, images, names)
        if message["role"] in ("system", "developer"):
            continue
        role = ASSISTANT if message["role"] == "assistant" else USER
        if turns and turns[-1][0] == role:
            turns[-1] = (role, turns[-1][1] + "\n" + text)  # consecutive messages of one role join
        else:
            turns.append((role, text))
        image_positions += [len(turns) - 1] * (len(images) - before)
    if len(images) > served.max_images:
        raise RequestError(f"a conversation holds at most {served.max_images} images here (--max-images); it has "
                           f"{len(images)}", "messages")
    if not turns or turns[-1][0] != USER:
        raise RequestError("the last message must be the user's (or a tool's result)", "messages")
    if turns[0][0] != USER:
        turns.insert(0, (USER, ""))  # an assistant greeting first: the template starts with a user turn
        image_positions = [position + 1 for position in image_positions]
    if tools is not None and tools.active:
        turns[0] = (USER, turns[0][1] + tools.first_turn_suffix())
    # the user turn each image came with: how many user turns precede its message
    image_turns = [sum(role == USER for role, _ in turns[:position]) for position in image_positions]
    return turns, images, image_turns


class Completion:
    """One chat completion request, parsed and checked before the model is touched."""

    def __init__(self, body, served: ServedModel):
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        self.served = served
        self.stream = bool(body.get("stream", False))
        try:
            self.params = read_params(body)
        except ParameterError as error:
            raise RequestError(str(error), error.param) from None
        self.options = self.params.options
        try:
            self.tools = read_tool_setup(body)
        except ToolRequestError as error:
            raise RequestError(str(error), error.param) from None
        turns, images, image_turns = parse_messages(body.get("messages"), served, self.tools)
        pixels = [served.image_processor(image) for image in images]
        self.sample = {"id": "request", "turns": turns, "answer_prefix": self.tools.answer_prefix(),
                       "image": pixels[0] if pixels else None}
        if image_turns != [0] * len(image_turns) or len(pixels) > 1:  # not one image with the first question
            self.sample.update(images=pixels, image_turns=image_turns)
        self.prompt_tokens = int(served.collator.generation_batch([self.sample])["attention_mask"].sum())
        check_room(self.prompt_tokens, self.options.max_new_tokens, served.model.max_context_len)
        self.id, self.created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())

    def usage(self, *answers: GeneratedAnswer) -> dict:
        """Token counts: the prompt once, and the ids generated for the answers, summed (n answers to one
        prompt). Counted where they were generated: re-tokenizing the answers' text gives another number."""
        completion = sum(answer.token_count for answer in answers)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion}

    def generate(self, count: int = 1) -> list[tuple[dict, str, GeneratedAnswer]]:
        """`count` assistant messages with their finish reasons ("tool_calls" when tools are offered and
        called, else the generation's "stop" or "length") and the answers as generated. A seed is set once,
        before the first answer, so a seeded request repeats exactly."""
        generated = self.served.batcher.answers(self.sample, self.options, self.params.seed, count)
        replies = []
        for answer in generated:
            message, finish = reply_message(self.sample["answer_prefix"] + answer.text, self.tools)
            replies.append((message, finish or answer.finish_reason, answer))
        return replies

    @property
    def warning(self) -> dict:
        """{"warning": the parameters ignored, each with why} when there are any (vLLM answers so too)."""
        return {"warning": "; ".join(self.params.warnings)} if self.params.warnings else {}

    def answer(self) -> dict:
        replies = self.generate(self.params.n)
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": self.served.name,
                "choices": [{"index": index, "message": message, "finish_reason": finish}
                            for index, (message, finish, _) in enumerate(replies)],
                "usage": self.usage(*(answer for _, _, answer in replies)), **self.warning}

    def chunks(self) -> Iterator[str]:
        """Server-sent events: the role, then each new piece of text, then the finish reason and [DONE]."""
        served = self.served

        def event(delta: dict | None, finish: str | None = None, usage: dict | None = None, **extra) -> str:
            chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": served.name,
                     "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
            if self.params.include_usage:  # null on every chunk but the last, as OpenAI sends it
                chunk["usage"] = usage
            return f"data: {json.dumps(chunk)}\n\n"

        yield event({"role": "assistant", "content": ""}, **self.warning)
        if self.tools.active:  # a call is known only once the whole reply is: generate it, then send it in pieces
            message, finish, answer = self.generate()[0]
            for delta in tool_call_deltas(message):
                yield event(delta)
            yield event({}, finish)
        else:
            stream = served.batcher.stream(self.sample, self.options, self.params.seed)
            for piece in stream:
                yield event({"content": piece})
            answer = stream.answer
            yield event({}, answer.finish_reason)
        if self.params.include_usage:
            yield event(None, usage=self.usage(answer))
        yield "data: [DONE]\n\n"


def error(status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
          code: str | None = None) -> JSONResponse:
    """An OpenAI-style JSON error."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


def create_app(served: ServedModel, api_key: str | None = None):
    """The FastAPI application: /v1/chat/completions, /v1/completions (text_completions.py), /v1/models and
    /health. With `api_key`, every /v1/ request must carry `Authorization: Bearer <api_key>` (as OpenAI
    clients send their key)."""
    app = FastAPI(title="MiniGPT", docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def check_key(request: Request, call_next):
        given = request.headers.get("authorization", "")
        if api_key and request.url.path.startswith("/v1/") and not hmac.compare_digest(given, f"Bearer {api_key}"):
            return error(401, "a valid API key is needed: send Authorization: Bearer <key>", kind="authentication_error")
        return await call_next(request)

    @app.get("/health")
    def health():
        return {"status": "ok", "model": served.name}

    @app.exception_handler(HTTPException)
    def http_error(request, exc):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    def validation_error(request, exc):
        return error(400, str(exc))

    @app.exception_handler(Exception)
    def server_error(request, exc):
        return error(500, f"{type(exc).__name__}: {exc}", kind="server_error")

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": served.name, "object": "model", "created": 0, "owned_by": "minigpt"}]}

    async def respond(request: Request, kind: type[Completion] | type[TextCompletion], prompt_param: str):
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return error(400, f"the request body is not JSON: {exc}")
        try:
            completion = await run_in_threadpool(kind, body, served)  # (it may fetch an image URL)
            if completion.stream:
                return StreamingResponse(completion.chunks(), media_type="text/event-stream")
            return await run_in_threadpool(completion.answer)
        except RequestError as exc:
            return error(exc.status, str(exc), exc.param, code=exc.code)
        except ValueError as exc:  # e.g. a conversation longer than the model's context
            return error(400, str(exc), prompt_param)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await respond(request, Completion, "messages")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await respond(request, TextCompletion, "prompt")

    return app
