"""A conversation that outgrows the model's context ends with a stop reason and an answer, never with the
chat engine's exception: the in-process model planner (the tiny model counting its prompt as it reads it),
the tool evaluation over several requests, and model tools reached through MCP or the web tab.
(An endpoint planner refused for length: tests/test_agent_loop.py and tests/test_serve_tools.py.)"""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO
from minigpt.agents import planners
from minigpt.agents.classical import classical_tools
from minigpt.agents.images import ImageStore
from minigpt.agents.loop import CONTEXT_FULL, earlier_results, run_agent
from minigpt.agents.model_tools import ModelHandle, model_tools
from minigpt.agents.planners import ContextFullError, ModelPlanner
from minigpt.agents.tool import Toolbox
from minigpt.agents.tool_eval import ScriptedPlanner, evaluate_tool_use
from minigpt.inference.loading import image_processor_for
from minigpt.config.loader import load_config
from minigpt.inference.chat import GenerationOptions
from minigpt.conversation.tool_calls import ToolCall, format_tool_call
from minigpt.inference.loading import load_for_inference
from minigpt.serving.mcp_server import call_result
from minigpt.serving.web_agent import AgentTab

CONTEXT = 600  # the tiny model's max_context_len here: four of the long calls below and their results fit
REQUEST = "Mark the red square with a labelled box. (image: img_0)"
LONG_CALL = format_tool_call("draw_boxes", {"image": "img_0", "boxes": [[20, 20, 60, 60]],
                                            "labels": ["the red square"]})
ANSWER = "I count 1 red square, marked with a box."


def scene() -> np.ndarray:
    image = np.full((100, 100, 3), 128, dtype=np.uint8)
    image[20:60, 20:60] = (220, 30, 30)
    return image


@pytest.fixture(scope="module")
def tiny(shapes_dir):
    """The tiny MiniGPT-4 (random weights) with room for a few turns: -> (model, image processor)."""
    config = load_config(REPO / "eval_configs/tiny_eval.yaml", [
        f"model.tokenizer={shapes_dir}/tokenizer", "model.ckpt=null",
        "model.llama_config.max_position_embeddings=1024", f"model.max_context_len={CONTEXT}"], for_training=False)
    return load_for_inference(config, torch.device("cpu")).eval(), image_processor_for(config)


@pytest.fixture
def never_stops(monkeypatch) -> list:
    """The model's text, scripted: the long call whenever it is offered tools, else ANSWER. Each prompt it
    is asked is kept as (its turns, its tokens + the reply's max_new_tokens)."""
    asked = []

    def generate(model, collator, samples, options):
        sample = samples[0]
        prompt = collator.encode(sample, for_generation=True).input_ids
        asked.append((sample["turns"], len(prompt) + options.max_new_tokens))
        return [LONG_CALL if "Tools:" in sample["turns"][0][1] else ANSWER]
    monkeypatch.setattr(planners, "generate_answers", generate)
    return asked


def model_planner(tiny, image: np.ndarray) -> ModelPlanner:
    model, processor = tiny
    return ModelPlanner(model, processor, image, GenerationOptions(max_new_tokens=40))


def new_toolbox(folder) -> Toolbox:
    toolbox = Toolbox(classical_tools(), ImageStore(folder), timeout_s=20)
    toolbox.images.add(scene(), tool="input")
    return toolbox


def steps_log(toolbox: Toolbox) -> list[dict]:
    return [json.loads(line) for line in (toolbox.images.folder / "steps.jsonl").read_text().splitlines()]


def test_a_planner_that_never_stops_answers_from_a_shorter_conversation_once_its_context_is_full(tiny, never_stops,
                                                                                                  tmp_path):
    toolbox = new_toolbox(tmp_path / "run")
    result = run_agent(model_planner(tiny, scene()), toolbox, REQUEST, max_steps=20)
    assert result.stopped == CONTEXT_FULL and 2 <= len(result.steps) <= 6 and all(step.ok for step in result.steps)
    assert all(needed <= CONTEXT for _, needed in never_stops)  # no prompt reached the engine without room for a reply
    assert 1 <= result.dropped < len(result.steps)
    assert result.answer == f"{ANSWER} (Stopped: {CONTEXT_FULL}; {earlier_results(result.dropped)} left out.)"
    final_turns = never_stops[-1][0]  # what the answer was asked from: the request, a note, the last turn
    assert final_turns[0][1] == f"{REQUEST}\n({earlier_results(result.dropped)} left out for lack of context.)"
    assert final_turns[-1][1].startswith(f'Result of draw_boxes: {{"image": "img_{len(result.steps)}"}}')
    assert final_turns[-1][1].endswith("Answer now in words, without calling a tool.")
    assert len(final_turns) == 1 + 2 * (len(result.steps) - result.dropped)
    stop = steps_log(toolbox)[-1]
    assert stop["stopped"] == CONTEXT_FULL and stop["dropped"] == result.dropped
    assert stop["error"].startswith("ContextFullError: the conversation takes ")
    assert f"of the model's {CONTEXT} tokens" in stop["error"]
    assert toolbox.images.handles == [f"img_{index}" for index in range(len(result.steps) + 1)]
    assert all(toolbox.images.path(handle).exists() for handle in toolbox.images.handles)


def test_a_request_too_long_for_the_context_stops_before_the_engine_would_refuse_it(tiny, tmp_path):
    """The real engine: a prompt that fits is generated on; one that leaves no whole reply's room is
    refused by the planner, and a run whose request alone does not fit stops with the reason."""
    planner = model_planner(tiny, scene())
    assert planner.next([{"role": "user", "content": "Which colors?"}], []).calls == []
    long_request = "Mark every red square. " * 60
    with pytest.raises(ContextFullError, match=f"of the model's {CONTEXT} tokens"):
        planner.next([{"role": "user", "content": long_request}], [])
    toolbox = new_toolbox(tmp_path / "run")
    result = run_agent(planner, toolbox, long_request)
    why = f"{CONTEXT_FULL}, even with only the request and the last turn"
    assert result.stopped == why and result.answer == f"Stopped: {why}. Steps: none."
    assert steps_log(toolbox) == [{"stopped": why, "dropped": 0, "error": result.error}]


class BrokenPlanner:
    def next(self, messages, tools, force_answer=False):
        raise RuntimeError("a bug in the planner")


def test_the_tool_evaluation_scores_a_run_that_ran_out_of_context_failed_and_goes_on(tiny, never_stops, tmp_path):
    """Four count requests: answered, out of context (its forced answer is right, and still fails),
    a planner that raises, answered again."""
    Image.fromarray(scene()).save(tmp_path / "scene.png")
    find_red = {"name": "find_color_regions", "arguments": {"image": "img_0", "color": "red"}}
    records = [{"id": f"r{index}", "image": "scene.png", "kind": "count", "request": "How many red shapes are there?",
                "answer": "1", "target": {"color": "red"}, "steps": [find_red]} for index in range(4)]
    answers = ScriptedPlanner(ToolCall(find_red["name"], find_red["arguments"]), None, "I count 1.")
    made = iter([answers, model_planner(tiny, scene()), BrokenPlanner(), answers])
    scores = evaluate_tool_use(lambda image: next(made), records, tmp_path, classical_tools(), tmp_path / "work",
                               max_steps=20)
    assert scores["success"] == 0.5 and scores["right_tool"] == 0.5 and scores["call_valid"] == 0.75
    stops = [json.loads((tmp_path / "work" / name / "steps.jsonl").read_text().splitlines()[-1]) for name in ("r1", "r2")]
    assert stops[0]["stopped"] == CONTEXT_FULL and stops[0]["error"].startswith("ContextFullError: ")
    assert stops[1] == {"stopped": "the planner failed: RuntimeError: a bug in the planner", "dropped": 0,
                        "error": "RuntimeError: a bug in the planner"}


def test_a_model_tool_whose_prompt_outgrows_the_context_is_an_error_through_mcp_and_the_web_tab(tiny, tmp_path):
    model, processor = tiny
    question = {"question": "zq" * 400}  # within the tool's 2000 characters, over the model's context
    toolbox = Toolbox(model_tools(ModelHandle(lambda: tiny)), ImageStore(tmp_path / "mcp"), timeout_s=60)
    handle = toolbox.images.add(scene(), tool="input")
    answered = call_result(toolbox.call("vqa", {"image": handle, **question}), toolbox.images)
    assert answered.is_error and "vqa failed: InputError: prompt of" in answered.content[0].text
    assert "leaves no room for an answer" in answered.content[0].text

    Image.fromarray(scene()).save(tmp_path / "scene.png")
    tab = AgentTab.for_model(model, processor, classical_tools(), tmp_path / "web")
    images, steps = tab.run(str(tmp_path / "scene.png"), "tool: vqa", json.dumps(question))
    assert "error: vqa failed: InputError: prompt of" in steps and steps.endswith("Stopped.") and len(images) == 1
