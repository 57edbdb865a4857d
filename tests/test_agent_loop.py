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
from minigpt.agents.planners import EndpointPlanner, PlannerError, PlannerReply, model_turns, reply_from_message
from minigpt.agents.tool import Tool, Toolbox
from minigpt.cli.main import main
from minigpt.conversation.tool_calls import ToolCall, format_tool_call, parse_tool_calls

RED_SQUARE = [20, 20, 60, 60]


def scene() -> np.ndarray:
    image = np.full((100, 100, 3), 128, dtype=np.uint8)
    image[20:60, 20:60] = (220, 30, 30)
    return image


class ScriptedPlanner:
    """Replies in turn from a script (the last one again once it runs out); records what it was shown."""

    def __init__(self, *replies: PlannerReply):
        self.replies, self.seen = list(replies), []

    def next(self, messages, tools, force_answer=False):
        self.seen.append((json.loads(json.dumps(messages)), force_answer))
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


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
    """/v1/chat/completions answering from the server's script, OpenAI's response layout."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append(body)
        message = self.server.script.pop(0)
        payload = json.dumps({"choices": [{"message": message, "finish_reason": "stop"}]}).encode()
        self.send_response(200)
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
