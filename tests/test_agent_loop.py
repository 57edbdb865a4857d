"""The planner loop: bounded, and every bad planner output or failing tool is handled within it."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
from PIL import Image

from minigpt.agents.classical import classical_tools
from minigpt.agents.images import ImageStore
from minigpt.agents.loop import run_agent
from minigpt.agents.planners import (ContextFullError, EndpointPlanner, PlannerError, PlannerReply, model_turns,
                                     reply_from_message)
from minigpt.agents.tool import Tool, Toolbox
from minigpt.cli.main import main
from minigpt.conversation.tool_calls import ToolCall, format_tool_call, parse_tool_calls

RED_SQUARE = [20, 20, 60, 60]


def scene() -> np.ndarray:
    image = np.full((100, 100, 3), 128, dtype=np.uint8)
    image[20:60, 20:60] = (220, 30, 30)
    return image


class ScriptedPlanner:
    """Replies in turn from a script (the last one again once it runs out), raising a scripted exception;
    records what it was shown."""

    def __init__(self, *replies: PlannerReply | Exception):
        self.replies, self.seen = list(replies), []

    def next(self, messages, tools, force_answer=False):
        self.seen.append((json.loads(json.dumps(messages)), force_answer))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        return reply


def call(name, **arguments):
    return PlannerReply(calls=[ToolCall(name, arguments)])


def hang(context, args):
    time.sleep(5)
    return {}


@pytest.fixture
def toolbox(tmp_path):
    tools = classical_tools() + [Tool("hang", "never returns", {"type": "object"}, hang)]
    box = Toolbox(tools, ImageStore(tmp_path / "run"), timeout_s=0.5)
    box.images.add(scene(), tool="input")
    return box


def test_a_request_is_planned_run_and_answered(toolbox):
    planner = ScriptedPlanner(call("find_color_regions", image="img_0", color="red"),
                              call("blur_region", image="img_0", box=[10, 10, 70, 70]), PlannerReply("Blurred: img_1."))
    result = run_agent(planner, toolbox, "blur the red square")
    assert result.answer == "Blurred: img_1." and result.stopped is None
    assert [s.tool for s in result.steps] == ["find_color_regions", "blur_region"] and all(s.ok for s in result.steps)
    assert result.steps[0].result["boxes"] == [RED_SQUARE]
    blurred = toolbox.images.get("img_1")
    assert not np.array_equal(blurred, scene()) and np.array_equal(blurred[70:], scene()[70:])
    second_turn = planner.seen[1][0]
    assert second_turn[-1]["role"] == "tool" and json.loads(second_turn[-1]["content"])["count"] == 1
    assert "img_0" in second_turn[0]["content"] and "never write a file path" in second_turn[0]["content"]


@pytest.mark.parametrize("bad, told", [
    (PlannerReply(problems=["a tool call that is not JSON"]), "Your tool call could not be read: a tool call that is not JSON"),
    (call("paint", image="img_0"), "error: unknown tool 'paint'"),
    (call("crop", image="img_0", box=[1, 2]), "error: invalid arguments for crop: box: [1, 2] is too short"),
    (call("crop", image="photo.jpg", box=RED_SQUARE), "error: invalid arguments for crop: image: 'photo.jpg' does not match"),
    (call("crop", image="img_9", box=RED_SQUARE), "error: crop: unknown image handle 'img_9' (this conversation's images: img_0)"),
    (call("crop", image="img_0", box=[0, 0, 500, 50]), "error: crop: box [0, 0, 500, 50] is not inside the 100x100 image"),
    (call("hang"), "error: hang did not finish: timed out after 0.5 s"),
])
def test_bad_calls_are_told_to_the_planner_which_may_then_recover(toolbox, bad, told):
    planner = ScriptedPlanner(bad, call("crop", image="img_0", box=RED_SQUARE), PlannerReply("Cropped: img_1."))
    result = run_agent(planner, toolbox, "crop the red square")
    assert result.answer == "Cropped: img_1." and result.stopped is None
    assert told in planner.seen[1][0][-1]["content"]
    assert np.array_equal(toolbox.images.get("img_1"), scene()[20:60, 20:60])


def test_repeated_invalid_calls_stop_the_run_with_a_forced_answer(toolbox):
    planner = ScriptedPlanner(call("paint"), call("paint"), call("paint"), PlannerReply("I could not do it."))
    result = run_agent(planner, toolbox, "paint it", max_steps=10, max_invalid=2)
    assert result.answer == "I could not do it." and result.stopped == "3 invalid calls in a row"
    assert planner.seen[-1][1] is True and len(result.steps) == 3


def test_a_planner_that_never_stops_is_stopped_at_the_step_limit(toolbox):
    planner = ScriptedPlanner(call("crop", image="img_0", box=RED_SQUARE))  # forever, even when asked to answer
    result = run_agent(planner, toolbox, "crop forever", max_steps=4)
    assert result.stopped == "the step limit (4) was reached" and len(result.steps) == 4
    assert result.answer.startswith("Stopped: the step limit (4) was reached. Steps: crop -> ok")
    assert toolbox.images.handles == ["img_0", "img_1", "img_2", "img_3", "img_4"]  # every image kept
    assert (toolbox.images.folder / "img_4.png").exists()


def steps_log(toolbox: Toolbox) -> list[dict]:
    return [json.loads(line) for line in (toolbox.images.folder / "steps.jsonl").read_text().splitlines()]


def test_any_exception_of_a_planner_turn_is_a_stop_reason_that_names_it(toolbox):
    crop = call("crop", image="img_0", box=RED_SQUARE)
    result = run_agent(ScriptedPlanner(crop, RuntimeError("a bug in the planner")), toolbox, "crop it")
    assert result.stopped == "the planner failed: RuntimeError: a bug in the planner"
    assert result.answer == "Stopped: the planner failed: RuntimeError: a bug in the planner. Steps: crop -> ok."
    assert toolbox.images.handles == ["img_0", "img_1"] and (toolbox.images.folder / "img_1.png").exists()
    assert steps_log(toolbox)[-1] == {"stopped": result.stopped, "dropped": 0, "error": "RuntimeError: a bug in the planner"}

    asked_to_answer = ScriptedPlanner(crop, crop, KeyError("choices"))  # fails once the step limit asks for words
    result = run_agent(asked_to_answer, toolbox, "crop it", max_steps=2)
    assert result.stopped == "the step limit (2) was reached; then the planner failed: KeyError: 'choices'"
    assert asked_to_answer.seen[-1][1] is True and len(result.steps) == 2


def test_text_form_calls_parse_and_text_after_a_call_is_never_an_observation():
    text = ('Let me look. <tool_call>{"name": "crop", "arguments": {"image": "img_0", "box": [1, 2, 3, 4]}}</tool_call>'
            "Observation: a cat")
    parsed = parse_tool_calls(text)
    assert parsed.content == "Let me look." and parsed.calls == [ToolCall("crop", {"image": "img_0", "box": [1, 2, 3, 4]})]
    assert parse_tool_calls(format_tool_call("edges", {"image": "img_0"})).calls == [ToolCall("edges", {"image": "img_0"})]
    broken = parse_tool_calls('<tool_call>{"name": "crop", "arguments": {"image": </tool_call>')
    assert not broken.calls and "not JSON" in broken.problems[0]
    assert "must be a JSON object" in parse_tool_calls('<tool_call>{"name": "crop", "arguments": [1]}</tool_call>').problems[0]
    assert parse_tool_calls("The answer is 3.").content == "The answer is 3."


def test_openai_messages_become_the_text_form_turns():
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "blur the red square"},
                {"role": "assistant", "content": None, "text_form": format_tool_call("edges", {"image": "img_0"})},
                {"role": "tool", "name": "edges", "content": '{"image": "img_1"}'}]
    turns = model_turns(messages, ["edges", "crop"])
    assert turns == [("user", "blur the red square\nTools: edges, crop"),
                     ("assistant", '<tool_call>{"name": "edges", "arguments": {"image": "img_0"}}</tool_call>'),
                     ("user", 'Result of edges: {"image": "img_1"}')]
    reply = reply_from_message({"content": "", "tool_calls": [
        {"function": {"name": "crop", "arguments": "{not json"}}, {"function": {"name": "edges", "arguments": '{"image": "img_0"}'}}]})
    assert reply.calls == [ToolCall("edges", {"image": "img_0"})] and "arguments are not JSON" in reply.problems[0]


class ScriptedEndpoint(BaseHTTPRequestHandler):
    """/v1/chat/completions answering from the server's script, OpenAI's response layout: a message, or
    (status, error) for an error answer."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        entry = self.server.script.pop(0)
        status, answer = entry if isinstance(entry, tuple) else (200, {"choices": [{"message": entry, "finish_reason": "stop"}]})
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = HTTPServer(("127.0.0.1", 0), ScriptedEndpoint)
    server.requests, server.script = [], []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def test_an_openai_compatible_endpoint_plans_through_the_command(endpoint, tmp_path, capsys):
    endpoint.script += [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "a", "type": "function", "function": {
            "name": "find_color_regions", "arguments": json.dumps({"image": "img_0", "color": "red"})}}]},
        {"role": "assistant", "content": "There is one red region, at [20, 20, 60, 60]."}]
    image = tmp_path / "scene.png"
    Image.fromarray(scene()).save(image)
    url = f"http://127.0.0.1:{endpoint.server_port}/v1"
    assert main(["agent", "--request", "where is the red region?", "--image", str(image), "--planner-url", url,
                 "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    assert '"answer": "There is one red region, at [20, 20, 60, 60]."' in printed
    first = endpoint.requests[0]
    offered = {t["function"]["name"] for t in first["tools"]}
    assert first["tool_choice"] == "auto" and {"find_color_regions", "blur_faces"} <= offered  # templates too
    assert endpoint.requests[1]["messages"][-1]["role"] == "tool"
    with pytest.raises(PlannerError, match="Connection refused|refused"):
        EndpointPlanner("http://127.0.0.1:9/v1", timeout_s=2).next([{"role": "user", "content": "hi"}], [])


TOO_LONG = (400, {"error": {"message": "This model's maximum context length is 4096 tokens. However, your messages "
                            "resulted in 4100 tokens.", "type": "invalid_request_error", "param": "messages",
                  "code": "context_length_exceeded"}})  # OpenAI's refusal, word for word but the numbers


def find_red(index: int) -> dict:
    return {"role": "assistant", "content": None, "tool_calls": [{"id": f"c{index}", "type": "function", "function": {
        "name": "find_color_regions", "arguments": json.dumps({"image": "img_0", "color": "red"})}}]}


def test_an_endpoint_that_refuses_a_long_conversation_answers_from_a_shorter_one(endpoint, tmp_path, capsys):
    """Refused for length at its fourth turn and twice more when asked for words, the endpoint is asked
    again with its two oldest calls and their results left out, and the command prints its answer."""
    endpoint.script += [find_red(0), find_red(1), find_red(2), TOO_LONG, TOO_LONG, TOO_LONG,
                        {"role": "assistant", "content": "There is one red region."}]
    image = tmp_path / "scene.png"
    Image.fromarray(scene()).save(image)
    url = f"http://127.0.0.1:{endpoint.server_port}/v1"
    assert main(["agent", "--request", "where is the red region?", "--image", str(image), "--planner-url", url,
                 "--max-steps", "10", "--out", str(tmp_path / "run")]) == 0
    printed = capsys.readouterr().out
    why = "the conversation outgrew the planner's context"
    assert f'"answer": "There is one red region. (Stopped: {why}; 2 earlier tool results left out.)"' in printed
    assert f'"stopped": "{why}"' in printed
    assert [request.get("tool_choice") for request in endpoint.requests] == ["auto"] * 4 + ["none"] * 3
    assert [len(request["messages"]) for request in endpoint.requests[4:]] == [9, 8, 6]  # a note for 1, then 2 turns
    last = endpoint.requests[-1]["messages"]
    assert [m["role"] for m in last] == ["system", "user", "user", "assistant", "tool", "user"]
    assert last[1]["content"].startswith("where is the red region?")
    assert last[2]["content"] == "(2 earlier tool results left out for lack of context.)"
    assert last[3]["tool_calls"][0]["id"] == last[4]["tool_call_id"] == "call_2_0"  # the last call and its result
    stop = json.loads((tmp_path / "run" / "steps.jsonl").read_text().splitlines()[-1])
    assert stop["stopped"] == why and stop["dropped"] == 2
    assert stop["error"].startswith("ContextFullError: ") and "maximum context length is 4096" in stop["error"]


def test_an_endpoint_error_answer_is_named_and_a_refusal_for_length_told_apart(endpoint):
    vllm_refusal = (400, {"object": "error", "message": "This model's maximum context length is 2048 tokens.",
                          "type": "BadRequestError", "code": 400})
    endpoint.script += [(500, {"error": {"message": "CUDA out of memory", "type": "server_error"}}), TOO_LONG,
                        vllm_refusal]
    planner = EndpointPlanner(f"http://127.0.0.1:{endpoint.server_port}/v1", timeout_s=5)
    hello = [{"role": "user", "content": "hi"}]
    with pytest.raises(PlannerError, match="HTTP 500: CUDA out of memory") as caught:
        planner.next(hello, [])
    assert not isinstance(caught.value, ContextFullError)
    for _ in range(2):
        with pytest.raises(ContextFullError, match="HTTP 400: .*maximum context length is"):
            planner.next(hello, [])
