"""The synthetic tool-use data, its builder and the tool-use evaluation, without training anything."""
import json

import pytest
from omegaconf import OmegaConf

from minigpt.agents.classical import classical_tools
from minigpt.agents.planners import PlannerReply, model_turns
from minigpt.agents.tool_eval import MajorityPlanner, evaluate_tool_use
from minigpt.conversation.tool_calls import ToolCall
from minigpt.datasets.annotations import AnnotationError
from minigpt.datasets.builders.tool_use_builder import ToolUseBuilder
from minigpt.synthetic.tool_use import HELD_OUT, generate


@pytest.fixture(scope="module")
def tool_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("tools")
    generate(out, seed=0, stage1_images=20, train_records=24, test_records=12, shard_size=10)
    return out, json.loads((out / "tool_train.json").read_text()), json.loads((out / "tool_test.json").read_text())


class ReplayPlanner:
    """Makes a record's reference calls in order, then gives its answer: what a perfect planner does."""

    def __init__(self, record):
        self.calls, self.answer = [ToolCall(s["name"], s["arguments"]) for s in record["steps"]], record["answer"]

    def next(self, messages, tools, force_answer=False):
        return PlannerReply(calls=[self.calls.pop(0)]) if self.calls and not force_answer else PlannerReply(self.answer)


def test_records_hold_the_real_results_and_held_out_pairs_stay_out_of_training(tool_data):
    out, train, test = tool_data
    assert {r["kind"] for r in train} == {"blur", "pixelate", "cutout", "count"}
    for record in train + test:
        first = record["steps"][0]
        assert first["name"] == "find_color_regions" and first["arguments"]["color"] == record["target"]["color"]
        assert (out / "images" / record["image"]).exists() and record["request"].endswith("(image: img_0)")
    single = [r for r in train + test if r["kind"] != "count"]
    assert all(((r["target"]["shape"], r["target"]["color"]) in HELD_OUT) == r["id"].startswith("test") for r in single)


def test_the_builder_writes_the_turns_the_planner_reads(tool_data):
    out, train, _ = tool_data
    section = OmegaConf.create({"builder": "tool_use", "build_info": {"ann_path": str(out / "tool_train.json"),
                                                                       "image_path": str(out / "images")}})
    builder = ToolUseBuilder("tool_use", OmegaConf.merge(
        OmegaConf.structured(ToolUseBuilder.config_class), section))
    record, source = builder.records()[0], train[0]
    turns = record["turns"]
    assert turns[0][1].startswith(source["request"] + "\nTools: face_detect, ") and turns[-1] == ("assistant", source["answer"])
    assert turns[1][1].startswith('<tool_call>{"name": "find_color_regions"') and turns[2][1].startswith("Result of find_color_regions: ")
    # The agent loop's messages for the same calls become the same turns (what the model sees at run time).
    messages = [{"role": "system", "content": "..."}, {"role": "user", "content": source["request"]}]
    for index, step in enumerate(source["steps"]):
        messages.append({"role": "assistant", "content": None, "text_form": turns[1 + 2 * index][1]})
        messages.append({"role": "tool", "name": step["name"], "content": json.dumps(step["result"])})
    assert model_turns(messages, [t.name for t in classical_tools()]) == turns[:-1]


def test_a_broken_step_is_refused_by_record(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"id": "r1", "image": "a.png", "request": "x", "answer": "y", "steps": [{"name": "crop"}]}]))
    section = OmegaConf.merge(OmegaConf.structured(ToolUseBuilder.config_class),
                              {"build_info": {"ann_path": str(path), "image_path": str(tmp_path)}})
    with pytest.raises(AnnotationError, match=r"bad.json.*r1.*steps\[0\] needs a name, an arguments object and a result"):
        ToolUseBuilder("tool_use", section).records()


def test_the_evaluation_scores_a_perfect_planner_1_and_the_majority_baseline_low(tool_data, tmp_path):
    out, train, test = tool_data
    replay = evaluate_tool_use(lambda image, it=iter(test): ReplayPlanner(next(it)), test, out / "images",
                               classical_tools(), tmp_path / "replay")
    assert replay == {**replay, "call_valid": 1.0, "right_tool": 1.0, "right_arguments": 1.0, "success": 1.0}
    majority = evaluate_tool_use(lambda image: MajorityPlanner(train), test, out / "images", classical_tools(),
                                 tmp_path / "majority")
    assert majority["call_valid"] == 1.0 and majority["success"] < 0.5
