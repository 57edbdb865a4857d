"""The tests of the learning tests: each one's assertion, fed what a model that ignores the image would
answer (the best constant answer, the right answer about another image, or the same score with and
without the right image), fails; fed right answers, it passes. Small generated data, no training."""
import json
import os
import random
import sys

import pytest

from conftest import REPO
from learning_controls import assert_beats, best_constant, data_controls, derangement
import test_face_learning as faces
import test_learning as learning
import test_paragraph_learning as paragraphs


def fails(check, *args) -> bool:
    try:
        check(*args)
    except AssertionError:
        return True
    return False


def test_controls_and_the_shared_assertion():
    exact = learning.exact
    train, truths = ["red", "red", "blue"], ["red", "blue", "green", "red"]
    controls = data_controls(train, truths, exact)
    assert controls["constant"] == 0.5 and controls["chance"] == 0.375  # "red": 2 of 4, "blue": 1 of 4
    assert controls["shuffled_truth"] < 1.0 and best_constant(train, truths, exact) == "red"
    assert all(index != partner for index, partner in enumerate(derangement(7)))
    assert_beats("ours", 0.9, controls, margin=0.3)
    with pytest.raises(AssertionError, match="strongest control, constant 0.500"):
        assert_beats("ours", 0.7, controls, margin=0.3)
    with pytest.raises(AssertionError, match="floor"):
        assert_beats("ours", 0.9, controls, margin=0.3, floor=0.95)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    data = tmp_path_factory.mktemp("shapes")
    learning.generate(data, seed=0, stage1_images=0, train_images=200, test_images=60, grounding_images=150,
                      grounding_test_images=40)
    learning.write_colour_questions(data)
    return data


def test_colour_assertions_fail_without_the_image(shapes):
    controls = learning.colour_controls(shapes)
    train = learning.colour_answers(json.loads((shapes / "train.json").read_text()))
    truths = learning.colour_answers(json.loads((shapes / "colour.json").read_text()))
    right = {"shapes_test": 1.0, "blank": 0.0, "shuffled": 0.0, "choice": 1.0, "choice_blank": 0.3, "choice_shuffled": 0.3}
    learning.check_colours(right, controls)
    constant = learning.exact([best_constant(train, truths, learning.exact)] * len(truths), truths)
    about_another = learning.exact([truths[i] for i in derangement(len(truths))], truths)
    problems = json.loads((shapes / "choice.json").read_text())
    for wrong in ({"shapes_test": constant}, {"shapes_test": about_another}, {"shuffled": 1.0},
                  {"choice": controls["choice"]["constant"]}, {"choice": 1 / 3}, {"choice_blank": 1.0}):
        assert fails(learning.check_colours, {**right, **wrong}, controls), wrong
    assert controls["choice"]["chance"] == pytest.approx(1 / 3) and len(problems) == len(truths)


def test_grounding_assertions_fail_without_the_description_or_the_image(shapes):
    train = [r for r in json.loads((shapes / "grounding_train.json").read_text()) if r["task"] == "refer"]
    test = json.loads((shapes / "grounding_test.json").read_text())
    controls = learning.grounding_controls(train, test)

    def scores(boxes, **controls_runs):
        described, any_shape = learning.described_share(boxes, test)
        return {"test": learning.refer_accuracy(boxes, test), "blank": 0.0, "shuffled": 0.0,
                "described": described, "any_shape": any_shape, **controls_runs}

    right = [tuple(r["box"]) for r in test]
    learning.check_grounding(scores(right), controls)
    rng = random.Random(0)
    any_shape = [tuple(rng.choice(r["boxes"])) for r in test]  # finds shapes, ignores the description
    constant = [best_constant([tuple(b) for b in right], test, learning.refer_accuracy)] * len(test)
    another = [right[i] for i in derangement(len(test))]
    for boxes in (any_shape, constant, another):
        assert fails(learning.check_grounding, scores(boxes), controls)
    assert fails(learning.check_grounding, scores(right, shuffled=1.0), controls)  # right whatever is asked


def test_pattern_assertions_fail_without_the_image(tmp_path):
    from minigpt.synthetic.patterns import generate

    generate(tmp_path, seed=0, train_images=80, test_images=40)
    controls = learning.pattern_controls(tmp_path)
    train, test = (json.loads((tmp_path / f"{split}.json").read_text()) for split in ("train", "test"))
    truths = [r["conversations"][1]["value"] for r in test]
    right = {"sub_images": 1.0, "sub_images_shuffled": 0.25, "global_view": 0.25}
    learning.check_patterns(right, controls)
    constant = learning.exact([best_constant([r["conversations"][1]["value"] for r in train], truths, learning.exact)]
                              * len(truths), truths)
    for wrong in ({"sub_images": constant}, {"sub_images": learning.exact([truths[i] for i in derangement(len(truths))], truths)},
                  {"sub_images_shuffled": 1.0}, {"global_view": 1.0}):
        assert fails(learning.check_patterns, {**right, **wrong}, controls), wrong


def test_face_assertions_fail_without_the_image(tmp_path):
    faces.generate(tmp_path, seed=0, train_images=120, test_images=40)
    controls = faces.face_controls(tmp_path)
    test, train = (json.loads((tmp_path / f"face_{split}.json").read_text()) for split in ("test", "train"))

    def run(values: dict[str, float], others: float = 1.0) -> dict[str, float]:
        return {f"{section}/match": values.get(section, others) for section in faces.LEARNED}

    def constant_scores() -> dict[str, float]:
        found = {}
        for section in faces.LEARNED:
            references = [{"section": section, "attributes": r["attributes"]} for r in test if r["section"] == section]
            answer = best_constant([r["answer"] for r in train if r["section"] == section], references, faces.section_match)
            found[section] = faces.section_match([answer] * len(references), references)
        return found

    right = {"faces": run({}), "blank": run({}, 0.0), "shuffled": run({}, 0.0), "select": run({faces.LEFT_OUT: 0.0}),
             "select_blank": run({}, 0.0)}
    faces.check_faces(right, controls)
    constant = constant_scores()
    for section in faces.LEARNED:
        assert fails(faces.check_faces, {**right, "faces": run({section: constant[section]})}, controls), section
        assert fails(faces.check_faces, {**right, "shuffled": run({section: 1.0}, 0.0)}, controls), section
    count = "Number of Faces"
    assert fails(faces.check_faces, {**right, "select": run({count: constant[count], faces.LEFT_OUT: 0.0})}, controls)
    assert fails(faces.check_faces, {**right, "select_blank": run({count: 1.0}, 0.0)}, controls)
    assert fails(faces.check_faces, {**right, "select": run({})}, controls)  # learned what it left out


def test_paragraph_assertions_fail_without_the_image(tmp_path):
    paragraphs.generate(tmp_path, seed=0)
    train = json.loads((tmp_path / "paragraph_train.json").read_text())
    gallery = json.loads((tmp_path / "gallery.json").read_text())
    controls = paragraphs.paragraph_controls(train, gallery)
    right = {"gallery": {"model/recall": 0.9, "model/IR@1": 0.8, "model/precision": 0.9, "caption_only/recall": 0.4,
                         "caption_only/IR@1": 0.2},
             "shuffled": {"model/recall": 0.1, "model/IR@1": 0.05, "model/precision": 0.2}}
    paragraphs.check_paragraphs(right, controls)
    for section, wrong in (("gallery", {"model/recall": controls["constant"]}),
                           ("gallery", {"model/recall": controls["shuffled_truth"]}),
                           ("gallery", {"model/IR@1": 0.2}), ("gallery", {"caption_only/recall": 0.9}),
                           ("shuffled", {"model/recall": 0.9}), ("shuffled", {"model/precision": 0.9})):
        assert fails(paragraphs.check_paragraphs, {**right, section: {**right[section], **wrong}}, controls), wrong


def test_sweep_table_shows_each_setting_with_the_spread(tmp_path):
    import subprocess

    lines = [{"test": "colours", "sweep": "colours base", "passed": True, "values": {"shapes_test": 0.9, "blank": 0.06}},
             {"test": "colours", "sweep": "colours seed=1", "passed": False, "values": {"shapes_test": 0.7, "blank": 0.1}},
             {"test": "faces", "sweep": "faces base", "passed": False, "values": {}}]  # crashed before its numbers
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(line) + "\n" for line in lines))
    table = subprocess.run([sys.executable, str(REPO / "scripts/learning_sweep_table.py"), str(results), "--markdown"],
                           capture_output=True, text=True, check=True).stdout
    assert "| value | base | seed=1 | min | max |" in table
    assert "| shapes_test | 0.900 | 0.700 | 0.700 | 0.900 |" in table
    assert "| passed | yes | NO |  |  |" in table and "### faces" in table


def test_sweep_refuses_an_unknown_test_or_setting(tmp_path):
    import subprocess

    for names, settings, said in ((["colour"], "base", "unknown learning test: colour"), (["colours"], "seed=9", "unknown setting: seed=9")):
        result = subprocess.run(["bash", str(REPO / "scripts/learning_sweep.sh"), *names], capture_output=True, text=True,
                                env={**os.environ, "SETTINGS": settings, "OUT": str(tmp_path)})
        assert result.returncode == 2 and said in result.stderr


def tool_use_blind_scores(tmp_path) -> dict[str, dict]:
    """Score dicts in the form of tests/test_tool_learning.py's `tool_scores`, for two planners that never
    look, the best constant call (MajorityPlanner) and the right calls of another record (shuffled truth),
    and for the right calls of each record."""
    from minigpt.synthetic.tool_use import generate
    from test_tool_learning import IMAGE_KINDS, first_call_controls

    from minigpt.agents.classical import classical_tools
    from minigpt.agents.tool_eval import MajorityPlanner, evaluate_tool_use, other_records_planner

    data = tmp_path / "tools"
    generate(data, seed=0, stage1_images=20, train_records=60, test_records=36, shard_size=10)
    train, test = (json.loads((data / f"tool_{split}.json").read_text()) for split in ("train", "test"))
    others = iter([test[partner] for partner in derangement(len(test))])
    rights = iter(test)
    planners = {"constant": lambda image: MajorityPlanner(train),
                "shuffled truth": lambda image: other_records_planner(next(others)),
                "right": lambda image: other_records_planner(next(rights))}
    scores = {name: evaluate_tool_use(make, test, data / "images", classical_tools(), tmp_path / name.replace(" ", "_"))
              for name, make in planners.items()}
    return {**scores, "data": first_call_controls(train, [r for r in test if r["kind"] in IMAGE_KINDS])}


def test_tool_assertions_fail_without_the_image(tmp_path):
    """Both blind planners fail check_tool_scores, with their own image controls (a planner that never
    looks scores the same on a blank or another image) and with the image controls at zero, where chance,
    the best constant and the shuffled truth must catch them alone; the right calls pass."""
    from test_tool_learning import check_tool_scores

    blind = tool_use_blind_scores(tmp_path)
    zero = dict.fromkeys(blind["right"], 0.0)
    check_tool_scores({"model": blind["right"], "blank image": zero, "shuffled images": zero, "majority call": zero,
                       "data": blind["data"]})
    for name in ("constant", "shuffled truth"):
        ours = blind[name]
        for controls, majority in ((ours, blind["constant"]), (zero, zero)):
            scores = {"model": ours, "blank image": controls, "shuffled images": controls, "majority call": majority,
                      "data": blind["data"]}
            assert fails(check_tool_scores, scores), (name, ours)
