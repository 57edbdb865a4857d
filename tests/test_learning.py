"""Learning test: the tiny MiniGPT-4, trained through torchrun + train.py (stage 1 then stage 2), names
the colours of held-out images through demo.py, and falls to chance when the images are blanked out."""
import json
import os
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO, run_script

sys.path.insert(0, str(REPO / "dataset"))
from synthetic_shapes import generate  # noqa: E402

TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")


def colour_accuracy(demo_output: str, records: dict) -> float:
    answers = [json.loads(line) for line in demo_output.splitlines() if line.startswith("{")]
    assert len(answers) == len(records)
    return sum(a["answer"] == records[a["id"]]["conversations"][1]["value"] for a in answers) / len(answers)


def first_and_last_loss(output_dir: Path) -> tuple[float, float]:
    curve = [json.loads(line)["loss"] for line in (output_dir / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    return curve[0], curve[-1]


@pytest.mark.slow
def test_tiny_minigpt4_learns_colours_and_needs_the_image(tmp_path):
    data = tmp_path / "shapes"
    generate(data, seed=0, grounding_images=0, grounding_test_images=0)
    out = tmp_path / "output"
    common = [f"model.tokenizer={data}/tokenizer"]
    run_script([TORCHRUN, "--nproc-per-node", "1", "--master-port", "29531", "train.py",
                "--cfg-path", "train_configs/tiny_stage1.yaml", "--options", *common,
                f"datasets.cc_sbu.build_info.storage={data}/shards/shapes-{{000000..000003}}.tar",
                f"run.output_dir={out}/stage1"], timeout=900)
    run_script([TORCHRUN, "--nproc-per-node", "1", "--master-port", "29532", "train.py",
                "--cfg-path", "train_configs/tiny_stage2.yaml", "--options", *common,
                f"datasets.sharegpt4v.build_info.ann_path={data}/train.json",
                f"datasets.sharegpt4v.build_info.image_path={data}/images",
                f"model.ckpt={out}/stage1", f"run.output_dir={out}/stage2"], timeout=900)
    for stage in ("stage1", "stage2"):
        first, last = first_and_last_loss(out / stage)
        assert last < 0.3 * first, f"{stage}: loss {first:.3f} -> {last:.3f}"

    # "Which colors do you see?" -> e.g. "red and blue": every colour in the image, none missing or extra.
    colour = [r for r in json.loads((data / "test.json").read_text()) if r["question_type"] == "colors"]
    (data / "colour.json").write_text(json.dumps(colour))
    Image.new("RGB", (64, 64), (255, 255, 255)).save(data / "images" / "blank.jpg")
    (data / "blank.json").write_text(json.dumps([{**r, "image": "blank.jpg"} for r in colour]))
    demo = ["demo.py", "--cfg-path", "eval_configs/tiny_eval.yaml", "--options", *common, f"model.ckpt={out}/stage2",
            "--json", "--batch-size", "100", "--max-new-tokens", "6", "--image-root", str(data / "images")]
    records = {r["id"]: r for r in colour}
    accuracy = colour_accuracy(run_script(demo + ["--questions", str(data / "colour.json")]).stdout, records)
    blank = colour_accuracy(run_script(demo + ["--questions", str(data / "blank.json")]).stdout, records)
    print(f"colour accuracy {accuracy:.3f} on {len(colour)} held-out questions; blank images {blank:.3f}")
    assert accuracy >= 0.9
    assert blank <= 0.2  # a blind model can only guess one fixed answer; no answer is that common
