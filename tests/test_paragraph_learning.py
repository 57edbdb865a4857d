"""The tiny MiniGPT-v2 trained on synthetic scenes (dataset/synthetic_paragraphs.py: one-line captions,
grounded descriptions, captions of crops) as captioner and grounder of the image-to-paragraph pipeline,
scored by eval.py on held-out gallery scenes and on the same scenes blanked out.

LEARNING_SEED=<n> runs it with another training seed (see tests/test_learning.py).
"""
import json
import os
import sys

import pytest
from PIL import Image

from conftest import REPO, run_script

sys.path.insert(0, str(REPO / "dataset"))
from synthetic_paragraphs import generate  # noqa: E402
from test_learning import eval_scores, first_and_last_loss  # noqa: E402

SEED = [f"run.seed={os.environ['LEARNING_SEED']}"] if os.environ.get("LEARNING_SEED") else []
MODEL_STAGES = "[caption,regions]"  # what the model itself says; segments are classical


@pytest.mark.slow
def test_tiny_model_writes_paragraphs_about_what_the_image_shows(tmp_path):
    data, out = tmp_path / "paragraphs", tmp_path / "output"
    generate(data, seed=0)
    common = [f"model.tokenizer={data}/tokenizer", *SEED]
    run_script(["train.py", "--cfg-path", "train_configs/tiny_paragraph.yaml", "--options", *common,
                f"datasets.paragraphs.build_info.ann_path={data}/paragraph_train.json",
                f"datasets.paragraphs.build_info.image_path={data}/images", f"run.output_dir={out}"], timeout=900)
    first, last = first_and_last_loss(out)
    assert last < 0.5 * first, f"loss {first:.3f} -> {last:.3f}"

    gallery = json.loads((data / "gallery.json").read_text())
    Image.new("RGB", (64, 64), (255, 255, 255)).save(data / "images" / "blank.png")
    (data / "gallery_blank.json").write_text(json.dumps([{**record, "image": "blank.png"} for record in gallery]))
    sections = {"gallery": "gallery.json", "blank": "gallery_blank.json"}
    options = [f"model.ckpt={out}", "evaluation_datasets.blank.builder=paragraph_gallery",
               "evaluation_datasets.blank.plain_check=false",  # ask the model about the blank image all the same
               "evaluation_datasets.blank.vis_processor.eval.name=blip2_image_eval",
               "evaluation_datasets.blank.vis_processor.eval.image_size=32"]
    for name, file in sections.items():
        options += [f"evaluation_datasets.{name}.build_info.ann_path={data / file}",
                    f"evaluation_datasets.{name}.build_info.image_path={data / 'images'}",
                    f"evaluation_datasets.{name}.max_new_tokens=80",
                    f"evaluation_datasets.{name}.variants.model={MODEL_STAGES}",
                    f"evaluation_datasets.{name}.variants.caption_only=[caption]"]
    scores = eval_scores("eval_configs/tiny_paragraph_eval.yaml", [*common, *options], tmp_path / "eval")
    ours, blank = scores["gallery"], scores["blank"]
    print(json.dumps({name: {key: round(value, 3) for key, value in values.items()} for name, values in scores.items()}))

    # Seeds 42 / 1 / 2 on a 2-core CPU, the model's stages: recall 0.562 / 0.472 / 0.556 (blanked 0.021 /
    # 0.083 / 0.083), precision 0.322 / 0.260 / 0.306 (blanked 0.025 / 0.100 / 0.117).
    assert ours["model/recall"] >= 0.35 and ours["model/recall"] >= blank["model/recall"] + 0.25
    assert ours["model/precision"] >= 0.18 and ours["model/precision"] >= blank["model/precision"] + 0.08
    # All stages against the caption alone, whose sentence fits three scenes of a group, seed 42 / 1 / 2:
    # IR@1 0.683 / 0.583 / 0.683 vs 0.200 / 0.167 / 0.200; TR@1 0.483 / 0.467 / 0.467 vs 0.237 / 0.204 /
    # 0.197; recall 0.910 / 0.896 / 0.847 vs 0.458 / 0.389 / 0.465.
    for score in ("IR@1", "TR@1", "recall"):
        assert ours[f"all/{score}"] >= ours[f"caption_only/{score}"] + 0.15, score
