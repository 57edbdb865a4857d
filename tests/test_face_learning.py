"""The face-description finetune learns each section from the image, and `select` steers what it learns.

On synthetic faces: tiny_v2_stage1 pretrained on the folder's shapes shards, then the tiny MiniGPT-v2 face
finetune (tiny_minigptv2_finetune_gpt4vision.yaml) through train.py, scored per section by eval.py on
held-out faces and on the same questions about a blank image. A second finetune leaves Fitzpatrick out by
`select`; that section then stays near chance while the count, which it kept, is learned.

To fit the test into a few minutes, both finetunes train on the five sections the test checks and leave
out the detailed descriptions (the config's sharegpt4v part); the second one runs
300 steps, long enough to learn the count (glasses and human-or-not take longer on some seeds).
LEARNING_SEED=<n> runs it with another training seed (see tests/test_learning.py).
"""
import json
import os
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import REPO, run_script

sys.path.insert(0, str(REPO / "dataset"))
from synthetic_faces import generate  # noqa: E402
from test_learning import eval_scores, first_and_last_loss  # noqa: E402

SEED = [f"run.seed={os.environ['LEARNING_SEED']}"] if os.environ.get("LEARNING_SEED") else []
EXPRESSION = "Facial Expression due to contextual cues"
LEARNED = (EXPRESSION, "Fitzpatrick", "Accessories", "Number of Faces", "Human or not")
LEFT_OUT = "Fitzpatrick"
FINETUNE_STEPS, SELECT_STEPS = 800, 300
EVAL_CONFIG = "eval_configs/tiny_v2_face_eval.yaml"


def finetune_config(data: Path, path: Path) -> Path:
    """The tiny MiniGPT-v2 face config on this data, without its detailed descriptions."""
    config = yaml.safe_load((REPO / "train_configs/tiny_minigptv2_finetune_gpt4vision.yaml").read_text())
    del config["datasets"]["sharegpt4v"]
    config["datasets"]["face_annotations"]["build_info"] = {"ann_path": str(data / "face_train.json"),
                                                           "image_path": str(data / "images")}
    path.write_text(yaml.safe_dump(config))
    return path


def finetune(config: Path, data: Path, out: Path, sections: list[str], steps: int) -> None:
    quoted = ",".join(f"'{section}'" for section in sections)
    run_script(["train.py", "--cfg-path", str(config), "--options", f"model.tokenizer={data}/tokenizer",
                f"model.ckpt={out.parent / 'stage1'}", f"run.output_dir={out}", f"run.iters_per_epoch={steps}",
                f"datasets.face_annotations.select=[{quoted}]", *SEED], timeout=900)
    first, last = first_and_last_loss(out)
    assert last < 0.3 * first, f"{out.name}: loss {first:.3f} -> {last:.3f}"


def section_table(scores: dict, blank: dict) -> dict:
    """Per section: match, match on the blank image, wrong and chance."""
    return {section: {"match": round(scores[f"{section}/match"], 3), "blank": round(blank[f"{section}/match"], 3),
                      "wrong": round(scores[f"{section}/wrong"], 3), "chance": round(scores[f"{section}/chance"], 3)}
            for section in LEARNED}


@pytest.mark.slow
def test_face_sections_are_learned_from_the_image_and_select_steers_them(tmp_path):
    data, out = tmp_path / "faces", tmp_path / "output"
    generate(data, seed=0, train_images=1500, test_images=100)
    tokenizer = f"model.tokenizer={data}/tokenizer"
    run_script(["train.py", "--cfg-path", "train_configs/tiny_v2_stage1.yaml", "--options", tokenizer,
                f"datasets.cc_sbu.build_info.storage={data}/shards/shapes-{{000000..000003}}.tar",
                f"run.output_dir={out}/stage1", "run.iters_per_epoch=200", *SEED], timeout=900)
    config = finetune_config(data, tmp_path / "finetune.yaml")
    finetune(config, data, out / "all", list(LEARNED), FINETUNE_STEPS)
    kept = [section for section in LEARNED if section != LEFT_OUT]
    finetune(config, data, out / "select", kept, SELECT_STEPS)

    test = [r for r in json.loads((data / "face_test.json").read_text()) if r["section"] in LEARNED]
    Image.new("RGB", (64, 64), (255, 255, 255)).save(data / "images" / "blank.png")
    (data / "test.json").write_text(json.dumps(test))
    (data / "blank.json").write_text(json.dumps([{**r, "image": "blank.png"} for r in test]))
    sections = [f"evaluation_datasets.{section}.build_info.{key}={value}" for section, file in
                (("faces", "test.json"), ("blank", "blank.json"))
                for key, value in (("ann_path", data / file), ("image_path", data / "images"))]
    blank_section = [f"evaluation_datasets.blank.{key}" for key in (
        "builder=face_annotations", "metric=attributes", "vis_processor.eval.name=blip2_image_eval",
        "vis_processor.eval.image_size=64")]
    full = eval_scores(EVAL_CONFIG, [tokenizer, f"model.ckpt={out / 'all'}", *sections, *blank_section],
                       tmp_path / "eval_all")
    steered = eval_scores(EVAL_CONFIG, [tokenizer, f"model.ckpt={out / 'select'}", *sections[:2]],
                          tmp_path / "eval_select")["faces"]
    scores = {("all", "test"): full["faces"], ("all", "blank"): full["blank"], ("select", "test"): steered}
    for run in ("all", "select"):
        print(run, json.dumps(section_table(scores[run, "test"], scores["all", "blank"]), indent=1))

    ours, blank, steered = scores["all", "test"], scores["all", "blank"], scores["select", "test"]
    for section in LEARNED:
        assert ours[f"{section}/match"] >= ours[f"{section}/chance"] + 0.15, section
        assert ours[f"{section}/match"] >= blank[f"{section}/match"] + 0.15, section
    count = "Number of Faces"  # the run with the shorter list learned from the image what it kept ...
    assert steered[f"{count}/match"] >= steered[f"{count}/chance"] + 0.2
    assert steered[f"{count}/match"] >= blank[f"{count}/match"] + 0.15
    assert steered[f"{LEFT_OUT}/match"] <= ours[f"{LEFT_OUT}/chance"] + 0.1  # ... and not what it left out
    assert steered[f"{LEFT_OUT}/match"] <= ours[f"{LEFT_OUT}/match"] - 0.3
