"""A tiny model learns to call the agent's tools (dataset/synthetic_tool_use.py), judged on held-out
colour-shape combinations by running its calls through the real agent loop on each image.

What it must learn from the image: a blur, pixelate or cutout request names the shape but not the colour,
and the first call, find_color_regions, needs the colour. Every held-out image pairs its shape with a
colour that shape never has in training, so the request's shape word alone points at a wrong colour.

The controls (tests/learning_controls.py) it must beat by a margin, on the right arguments of the first
call and on end-to-end success, both over the three image kinds:
- chance and best constant: one of the training first calls drawn at random, and the single best one
  (data only; a planner that guesses the call succeeds at most as often as its guess is right, so these
  bound success too);
- majority call: the best constant call (MajorityPlanner) run through the loop;
- blank image and shuffled images: the model itself given a white image or another request's image.

Cutouts count when the cutout ran on the target's box and the answer names the target's colour and no
other; counts are asked with the colour in the request, so a blind planner answering "There is one."
scores about as well (0.7-0.8): they are checked, not claimed as learned.

LEARNING_SEED=<n> trains with another seed, LEARNING_DATA_SEED=<n> draws another data set
(`generate(seed=n)`); scripts/learning_sweep.sh runs it over both and over the CPU kernel paths. Measured,
one thread (threads=all: two), 80 held-out requests (60 of the image kinds), a 2-core AMD EPYC:

| run | success, image kinds | cutout | count | right arguments, image kinds | strongest control (arguments / success) |
|---|---|---|---|---|---|
| base | 0.98 | 1.00 | 1.00 | 1.00 | 0.20 / 0.17 |
| seed=1 | 0.78 | 0.75 | 1.00 | 0.80 | 0.20 / 0.17 |
| seed=2 | 0.97 | 0.95 | 1.00 | 1.00 | 0.20 / 0.17 |
| data=1 | 1.00 | 1.00 | 0.90 | 1.00 | 0.22 / 0.18 |
| data=2 | 0.87 | 0.70 | 0.80 | 1.00 | 0.22 / 0.18 |
| aten=default | 0.98 | 1.00 | 1.00 | 1.00 | 0.20 / 0.17 |
| aten=avx2 | 0.98 | 1.00 | 1.00 | 1.00 | 0.20 / 0.17 |
| onednn+mkl=avx2 | 1.00 | 1.00 | 1.00 | 1.00 | 0.20 / 0.17 |
| threads=all | 0.98 | 1.00 | 1.00 | 1.00 | 0.20 / 0.18 |
| seed=7 | 0.67 | 1.00 | 0.95 | 1.00 | 0.20 / 0.17 |

Training seed 7 fails: it blurs every image it is asked to pixelate (pixelate 0.00, its first calls
right), which the floor on each kind catches; the average over the kinds would not.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, TRAINING_TIMEOUT_S, run_script
from learning_controls import DATA_SEED, TRAINING_SEED, assert_beats, data_controls, derangement, record
from minigpt.agents.classical import classical_tools
from minigpt.agents.planners import ModelPlanner
from minigpt.agents.tool_eval import MajorityPlanner, evaluate_tool_use
from minigpt.inference.loading import image_processor_for
from minigpt.config.loader import load_config
from minigpt.inference.loading import load_for_inference
from minigpt.synthetic.tool_use import generate

IMAGE_KINDS = ("blur", "pixelate", "cutout")  # requests that leave out the colour: the call needs the image
SEED = TRAINING_SEED


@pytest.mark.slow
def test_tiny_model_learns_to_call_tools_and_needs_the_image(tmp_path):
    data = tmp_path / "tools"
    generate(data, seed=DATA_SEED, train_records=2000, test_records=80)
    config = train(data, tmp_path / "output")
    torch.manual_seed(0)
    model = load_for_inference(config, torch.device("cpu"))
    scores = tool_scores(model, image_processor_for(config), data, tmp_path / "eval")
    record("tools", {f"{name}/{key}": round(value, 3) for name, values in scores.items() for key, value in values.items()})
    check_tool_scores(scores)


def train(data: Path, out: Path):
    """tiny_stage1 on the data set's captions, then tiny_tools on its tool-use records; -> the config."""
    common = [f"model.tokenizer={data}/tokenizer", *SEED]
    run_script(["train.py", "--cfg-path", "train_configs/tiny_stage1.yaml", "--options", *common,
                f"datasets.cc_sbu.build_info.storage={data}/shards/shapes-{{000000..000003}}.tar",
                f"run.output_dir={out}/stage1"], timeout=TRAINING_TIMEOUT_S)
    run_script(["train.py", "--cfg-path", "train_configs/tiny_tools.yaml", "--options", *common,
                f"datasets.tool_use.build_info.ann_path={data}/tool_train.json",
                f"datasets.tool_use.build_info.image_path={data}/images", f"model.ckpt={out}/stage1",
                f"run.output_dir={out}/tools"], timeout=TRAINING_TIMEOUT_S)
    return load_config(REPO / "train_configs/tiny_tools.yaml", [*common, f"model.ckpt={out}/tools"], for_training=False)


def tool_scores(model, processor, data: Path, work: Path) -> dict[str, dict]:
    """The model and its controls through the agent loop, and the data-only controls under "data". The
    image controls are asked only the requests that need the image."""
    test = json.loads((data / "tool_test.json").read_text())
    train = json.loads((data / "tool_train.json").read_text())
    needs_image = [record for record in test if record["kind"] in IMAGE_KINDS]
    blank = np.full((64, 64, 3), 255, dtype=np.uint8)
    others = iter([read_image(data, needs_image[partner]) for partner in derangement(len(needs_image))])
    planners = {"model": (test, lambda image: ModelPlanner(model, processor, image)),
                "blank image": (needs_image, lambda image: ModelPlanner(model, processor, blank)),
                "shuffled images": (needs_image, lambda image: ModelPlanner(model, processor, next(others))),
                "majority call": (test, lambda image: MajorityPlanner(train))}
    scores = {name: evaluate_tool_use(make, records, data / "images", classical_tools(), work / name.replace(" ", "_"))
              for name, (records, make) in planners.items()}
    return {**scores, "data": first_call_controls(train, needs_image)}


def read_image(data: Path, record: dict) -> np.ndarray:
    return np.asarray(Image.open(data / "images" / record["image"]).convert("RGB"))


def first_call_controls(train: list[dict], test: list[dict]) -> dict[str, float]:
    """Chance, best constant and shuffled truth for the first call of the image kinds' requests, scored
    as right_arguments scores it (same tool, same arguments)."""
    def call(record):
        return json.dumps([record["steps"][0]["name"], record["steps"][0]["arguments"]], sort_keys=True)

    def right(predictions, references):
        return sum(p == r for p, r in zip(predictions, references)) / len(references)

    image_kinds = [call(record) for record in train if record["kind"] in IMAGE_KINDS]
    return data_controls(image_kinds, [call(record) for record in test], right)


def image_kinds(scores: dict, metric: str) -> float:
    """Mean of `metric` (success, right_arguments) over the kinds whose request leaves out the colour."""
    return sum(scores[f"{metric}_{kind}"] for kind in IMAGE_KINDS) / len(IMAGE_KINDS)


def check_tool_scores(scores: dict[str, dict]) -> None:
    """The test's assertions, on the scores `tool_scores` returns (tests/test_learning_controls.py feeds
    it a constant planner and a planner making another record's right calls: both must fail it)."""
    ours, data = scores["model"], scores["data"]
    assert ours["call_valid"] >= 0.9 and ours["right_tool"] >= 0.9, ours
    runs = ("blank image", "shuffled images", "majority call")
    arguments = {**{name: image_kinds(scores[name], "right_arguments") for name in runs}, "chance": data["chance"],
                 "best constant": data["constant"], "shuffled truth": data["shuffled_truth"]}
    assert_beats("right arguments, image kinds", image_kinds(ours, "right_arguments"), arguments, *ARGUMENTS)
    # A planner that guesses the first call succeeds at most as often as the guess is right: chance bounds it.
    success = {**{name: image_kinds(scores[name], "success") for name in runs}, "chance": data["chance"]}
    assert_beats("success, image kinds", image_kinds(ours, "success"), success, *SUCCESS)
    for kind in IMAGE_KINDS:  # each kind on its own: a model that blurs what it is asked to pixelate fails
        assert ours[f"success_{kind}"] >= KIND_FLOOR, (kind, ours)
    assert ours["success_count"] >= COUNT_FLOOR, ours  # the request names the colour: no image needed


# (margin over the strongest control, floor), below the worst run of the table in the module docstring.
ARGUMENTS, SUCCESS = (0.4, 0.7), (0.4, 0.6)
KIND_FLOOR, COUNT_FLOOR = 0.5, 0.7
