"""Tool calling through the OpenAI-compatible API, with the official openai client: what the model is
shown (the tools, earlier calls, tool results) and how its text-form calls come back as tool_calls.
The model's text is scripted here; what a model trained to call tools writes is the learning test's."""
import json
import socket
import threading
import time

import numpy as np
import openai
import pytest
import torch
import uvicorn
from starlette.testclient import TestClient

from conftest import REPO
from minigpt.agents.classical import classical_tools
from minigpt.agents.images import ImageStore
from minigpt.agents.loop import CONTEXT_FULL, run_agent
from minigpt.agents.planners import EndpointPlanner
from minigpt.agents.tool import Toolbox
from minigpt.inference.loading import image_processor_for
from minigpt.config.loader import load_config
from minigpt.conversation.collator import collator_for
from minigpt.conversation.generated import GeneratedAnswer
from minigpt.inference.loading import load_for_inference
from minigpt.serving import batching
from minigpt.serving.openai_api import ServedModel, create_app

TOOLS = [{"type": "function", "function": {"name": name, "description": "", "parameters": {"type": "object"}}}
         for name in ("find_color_regions", "crop")]
CALL = '<tool_call>{"name": "find_color_regions", "arguments": {"image": "img_0", "color": "red"}}</tool_call>'


@pytest.fixture(scope="module")
def served(shapes_dir, tmp_path_factory):
    config = load_config(REPO / "eval_configs/tiny_eval.yaml", [f"model.tokenizer={shapes_dir}/tokenizer", "model.ckpt=null"],
                         for_training=False)
    model = load_for_inference(config, torch.device("cpu"))
    return ServedModel("tiny", model, image_processor_for(config), tmp_path_factory.mktemp("images"))


@pytest.fixture
def scripted(served, monkeypatch):
    """The model's replies, in turn; each request's sample is kept to check what the model was shown."""
    script = {"replies": [], "samples": []}

    def generate(model, collator, samples, options, **kwargs):
        script["samples"].append(samples[0])
        return [GeneratedAnswer(script["replies"].pop(0), token_count=10, finish_reason="stop")]
    monkeypatch.setattr(batching, "generate_counted_answers", generate)
    return script


@pytest.fixture
def api(served):
    return openai.OpenAI(base_url="http://testserver/v1", api_key="unused", max_retries=0,
                         http_client=TestClient(create_app(served)))


def test_a_text_form_call_comes_back_as_tool_calls_and_the_result_goes_in(api, scripted):
    scripted["replies"] += [CALL, "There is one red region."]
    question = [{"role": "user", "content": "Where is the red region? (image: img_0)"}]
    reply = api.chat.completions.create(model="tiny", messages=question, tools=TOOLS, max_tokens=40)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.function.name == "find_color_regions" and json.loads(call.function.arguments) == {"image": "img_0", "color": "red"}
    assert scripted["samples"][0]["turns"] == [("user", "Where is the red region? (image: img_0)\nTools: find_color_regions, crop")]

    result = {"boxes": [[20, 20, 60, 60]], "count": 1}
    follow = question + [choice.message.model_dump(exclude_none=True),
                         {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}]
    answer = api.chat.completions.create(model="tiny", messages=follow, tools=TOOLS, max_tokens=40)
    assert answer.choices[0].message.content == "There is one red region." and answer.choices[0].finish_reason != "tool_calls"
    turns = scripted["samples"][1]["turns"]
    assert turns[1] == ("assistant", CALL)
    assert turns[2] == ("user", f"Result of find_color_regions: {json.dumps(result)}")


def test_streamed_tool_calls_assemble_as_the_client_expects(api, scripted):
    scripted["replies"].append("Let me look. " + CALL)
    stream = api.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "red? (image: img_0)"}],
                                         tools=TOOLS, max_tokens=40, stream=True)
    content, name, arguments, finish = "", "", "", None
    for chunk in stream:
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for call in delta.tool_calls or []:
            name += call.function.name or ""
            arguments += call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert (content, name, json.loads(arguments), finish) == (
        "Let me look.", "find_color_regions", {"image": "img_0", "color": "red"}, "tool_calls")


def test_tool_choice_forces_a_call_and_none_offers_no_tools(api, scripted, served):
    scripted["replies"] += ['{"image": "img_0", "box": [1, 2, 30, 40]}}</tool_call>', CALL]
    question = [{"role": "user", "content": "Crop it. (image: img_0)"}]
    forced = api.chat.completions.create(model="tiny", messages=question, tools=TOOLS, max_tokens=40,
                                         tool_choice={"type": "function", "function": {"name": "crop"}})
    call = forced.choices[0].message.tool_calls[0]
    assert call.function.name == "crop" and json.loads(call.function.arguments) == {"image": "img_0", "box": [1, 2, 30, 40]}
    sample = scripted["samples"][0]
    assert sample["answer_prefix"] == '<tool_call>{"name": "crop", "arguments": '
    prompt = collator_for(served.model).generation_batch([{**sample, "image": None}])["input_ids"][0].tolist()
    prefix = served.model.tokenizer(sample["answer_prefix"], add_special_tokens=False).input_ids  # the prompt's end
    assert prompt[-len(prefix):] == prefix

    plain = api.chat.completions.create(model="tiny", messages=question, tools=TOOLS, tool_choice="none", max_tokens=40)
    assert plain.choices[0].message.content == CALL and not plain.choices[0].message.tool_calls
    assert "Tools:" not in scripted["samples"][1]["turns"][0][1]


@pytest.mark.parametrize("extra, param, message", [
    ({"tools": [{"type": "function"}]}, "tools[0]", "each tool is {type: function"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "paint"}}}, "tool_choice", "names no tool"),
    ({"tool_choice": "required"}, "tool_choice", "needs 'tools'"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice", "tool_choice is none, auto, required"),
])
def test_bad_tool_requests_name_the_parameter(api, extra, param, message):
    with pytest.raises(openai.APIStatusError) as caught:
        api.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], **extra)
    assert caught.value.status_code == 400 and caught.value.body["param"] == param
    assert message in caught.value.body["message"]


def test_a_conversation_too_long_for_the_context_is_refused_as_openai_refuses_it(api):
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "zq" * 300}], max_tokens=8)
    assert (caught.value.body["code"], caught.value.body["param"]) == ("context_length_exceeded", "messages")
    assert "of the model's 256 tokens (its maximum context length) and leaves no room" in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4000)
    assert (caught.value.body["code"], caught.value.body["param"]) == ("context_length_exceeded", "max_tokens")


@pytest.fixture
def endpoint_url(served):
    """The app on a local port, for a client that speaks HTTP itself (the agent's EndpointPlanner)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(served), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and thread.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(10)


def test_an_endpoint_planner_pointed_at_the_server_stops_for_lack_of_context(served, endpoint_url, monkeypatch, tmp_path):
    """The served model calls a tool whenever it is offered tools and answers when it is not; the server
    refuses the turn that no longer fits (its default max_tokens, 300, included) with the code the planner
    knows, and the loop asks for an answer from a shorter conversation."""
    monkeypatch.setattr(served.model, "max_context_len", 640)  # the scripted text never runs the model's positions

    def generate(model, collator, samples, options, **kwargs):
        offered_tools = "Tools:" in samples[0]["turns"][0][1]
        return [GeneratedAnswer(CALL if offered_tools else "One red region.", token_count=10, finish_reason="stop")]
    monkeypatch.setattr(batching, "generate_counted_answers", generate)
    toolbox = Toolbox(classical_tools(), ImageStore(tmp_path / "run"), timeout_s=20)
    toolbox.images.add(np.zeros((64, 64, 3), dtype=np.uint8), tool="input")
    planner = EndpointPlanner(endpoint_url, "tiny", timeout_s=60)
    result = run_agent(planner, toolbox, "Where is the red region? (image: img_0)", max_steps=20)
    assert result.stopped == CONTEXT_FULL and 2 <= len(result.steps) < 20
    assert result.answer.startswith(f"One red region. (Stopped: {CONTEXT_FULL}")
    assert result.error.startswith(f"ContextFullError: {endpoint_url}/chat/completions: HTTP 400: the conversation takes")
