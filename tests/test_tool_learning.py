"""A tiny model learns to call the agent's tools (dataset/synthetic_tool_use.py), judged on held-out
colour-shape combinations by running its calls through the real agent loop on each image.

LEARNING_SEED=<n> runs it with another training seed (see tests/test_learning.py).
"""
import json
import os
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, run_script
from minigpt.agents.classical import classical_tools
from minigpt.agents.planners import ModelPlanner
from minigpt.agents.tool_eval import MajorityPlanner, evaluate_tool_use
from minigpt.cli.options import image_processor_for
from minigpt.config.loader import load_config
from minigpt.models.inference import load_for_inference

sys.path.insert(0, str(REPO / "dataset"))
from synthetic_tool_use import generate  # noqa: E402

IMAGE_KINDS = ("blur", "pixelate", "cutout")  # requests that leave out the colour: the call needs the image
SEED = [f"run.seed={os.environ['LEARNING_SEED']}"] if os.environ.get("LEARNING_SEED") else []


@pytest.mark.slow
def test_tiny_model_learns_to_call_tools_and_needs_the_image(tmp_path):
    data, out = tmp_path / "tools", tmp_path / "output"
    generate(data, seed=0, train_records=2000, test_records=80)
    common = [f"model.tokenizer={data}/tokenizer", *SEED]
    run_script(["train.py", "--cfg-path", "train_configs/tiny_stage1.yaml", "--options", *common,
                f"datasets.cc_sbu.build_info.storage={data}/shards/shapes-{{000000..000003}}.tar",
                f"run.output_dir={out}/stage1"], timeout=900)
    run_script(["train.py", "--cfg-path", "train_configs/tiny_tools.yaml", "--options", *common,
                f"datasets.tool_use.build_info.ann_path={data}/tool_train.json",
                f"datasets.tool_use.build_info.image_path={data}/images", f"model.ckpt={out}/stage1",
                f"run.output_dir={out}/tools"], timeout=900)

    config = load_config(REPO / "train_configs/tiny_tools.yaml", [*common, f"model.ckpt={out}/tools"], for_training=False)
    torch.manual_seed(0)
    model = load_for_inference(config, torch.device("cpu"))
    processor = image_processor_for(config)
    test = json.loads((data / "tool_test.json").read_text())
    train = json.loads((data / "tool_train.json").read_text())
    blank = np.full((64, 64, 3), 255, dtype=np.uint8)
    planners = {"model": lambda image: ModelPlanner(model, processor, image),
                "blank image": lambda image: ModelPlanner(model, processor, blank),
                "majority call": lambda image: MajorityPlanner(train)}
    needs_image = [record for record in test if record["kind"] in IMAGE_KINDS]  # all the blank image is asked
    scores = {name: evaluate_tool_use(make, needs_image if name == "blank image" else test, data / "images",
                                      classical_tools(), tmp_path / name.replace(" ", "_"))
              for name, make in planners.items()}
    for name, values in scores.items():
        print(name, json.dumps({key: round(value, 3) for key, value in values.items()}))
    ours, blind, majority = scores["model"], scores["blank image"], scores["majority call"]
    # Seed 42 on the 80 requests asked now (the blank image is asked only the kinds that need the image):
    # success 0.588 (blur 0.75, pixelate 0.60, cutout 0.0, count 1.0), image kinds 0.45 against 0.08 blind.
    # Seeds 42 / 1 / 2 on a 2-core CPU, on 120 held-out requests: calls valid and right tool 1.0, right arguments 1.0, success
    # 0.625 / 0.708 / 0.667 (blur 0.80 / 0.97 / 0.90, pixelate 0.70 / 0.87 / 0.77, cutout 0.0, count 1.0);
    # blank image 0.308 / 0.333 / 0.342; majority call 0.033. A count request names its colour, so a blind
    # model counts right too (0.87-0.97); the image's part shows on the other kinds: 0.50 / 0.61 / 0.56
    # against 0.12 / 0.13 / 0.13 blind.
    assert ours["call_valid"] >= 0.9 and ours["right_tool"] >= 0.9 and ours["right_arguments"] >= 0.8
    assert ours["success"] >= 0.5 and ours["success"] >= majority["success"] + 0.3
    assert image_kinds_success(ours) >= image_kinds_success(blind) + 0.25


def image_kinds_success(scores: dict) -> float:
    """Mean success on the kinds whose request leaves out the colour: the call needs the image."""
    return sum(scores[f"success_{kind}"] for kind in IMAGE_KINDS) / len(IMAGE_KINDS)
