"""The tiny MiniGPT-v2 trained on synthetic scenes (dataset/synthetic_paragraphs.py: one-line captions,
grounded descriptions, captions of crops) as captioner and grounder of the image-to-paragraph pipeline,
scored by eval.py on held-out gallery scenes and on the same scenes with their images shuffled.

What the model itself says (its caption and grounded regions, no classical stage) must beat the caption
alone, the model given another scene's image, the best constant caption among the training captions and
another scene's own description, by a margin (tests/learning_controls.py). LEARNING_SEED /
LEARNING_DATA_SEED pick the seeds (see tests/test_learning.py).
"""
import json

import pytest

from conftest import TRAINING_TIMEOUT_S, run_script
from learning_controls import DATA_SEED, TRAINING_SEED, assert_beats, data_controls, record
from minigpt.evaluation.paragraph_metrics import fact_scores, scene_text
from minigpt.synthetic.paragraphs import generate
from test_learning import eval_scores, first_and_last_loss, shuffled_images

MODEL_STAGES = "[caption,regions]"  # what the model itself says; segments are classical


def paragraph_controls(train: list[dict], gallery: list[dict]) -> dict[str, float]:
    """Recall of the facts of each scene by one training caption given for every scene, and by another
    scene's own description."""
    def recall(paragraphs: list[str], records: list[dict]) -> float:
        return fact_scores(paragraphs, [r["objects"] for r in records])["recall"]

    captions = [r["conversations"][1]["value"] for r in train if r["task"] == "caption"]
    return data_controls(captions, gallery, recall, truths=[scene_text(r["objects"]) for r in gallery])


def check_paragraphs(scores: dict[str, dict[str, float]], controls: dict[str, float]) -> None:
    """scores: the gallery and shuffled sections' paragraph scores, per variant ("model/recall" ...). The
    regions add to what the caption already finds a smaller share than either finds without the image, so
    the margin over the caption alone is the smaller one."""
    ours, shuffled = scores["gallery"], scores["shuffled"]
    assert_beats("recall of the model's stages", ours["model/recall"], {
        **controls, "shuffled images": shuffled["model/recall"]}, margin=0.15)
    # Over the caption alone, in the nine runs of the sweep (bench/results/learning_sweep.md): +0.057 to +0.138.
    assert_beats("recall of the model's stages", ours["model/recall"], {"caption only": ours["caption_only/recall"]},
                 margin=0.03)
    assert_beats("IR@1 of the model's stages", ours["model/IR@1"], {
        "caption only": ours["caption_only/IR@1"], "shuffled images": shuffled["model/IR@1"]}, margin=0.15)
    assert_beats("precision of the model's stages", ours["model/precision"], {
        "shuffled images": shuffled["model/precision"]}, margin=0.08)


@pytest.mark.slow
def test_tiny_model_writes_paragraphs_about_what_the_image_shows(tmp_path):
    data, out = tmp_path / "paragraphs", tmp_path / "output"
    generate(data, seed=DATA_SEED)
    common = [f"model.tokenizer={data}/tokenizer", *TRAINING_SEED]
    run_script(["train.py", "--cfg-path", "train_configs/tiny_paragraph.yaml", "--options", *common,
                f"datasets.paragraphs.build_info.ann_path={data}/paragraph_train.json",
                f"datasets.paragraphs.build_info.image_path={data}/images", f"run.output_dir={out}"], timeout=TRAINING_TIMEOUT_S)
    first, last = first_and_last_loss(out)
    assert last < 0.5 * first, f"loss {first:.3f} -> {last:.3f}"

    gallery = json.loads((data / "gallery.json").read_text())
    (data / "gallery_shuffled.json").write_text(json.dumps(shuffled_images(gallery)))
    sections = {"gallery": "gallery.json", "shuffled": "gallery_shuffled.json"}
    options = [f"model.ckpt={out}", "evaluation_datasets.shuffled.builder=paragraph_gallery",
               "evaluation_datasets.shuffled.vis_processor.eval.name=blip2_image_eval",
               "evaluation_datasets.shuffled.vis_processor.eval.image_size=32"]
    for name, file in sections.items():
        options += [f"evaluation_datasets.{name}.build_info.ann_path={data / file}",
                    f"evaluation_datasets.{name}.build_info.image_path={data / 'images'}",
                    f"evaluation_datasets.{name}.max_new_tokens=80",
                    f"evaluation_datasets.{name}.variants.model={MODEL_STAGES}",
                    f"evaluation_datasets.{name}.variants.caption_only=[caption]"]
    scores = eval_scores("eval_configs/tiny_paragraph_eval.yaml", [*common, *options], tmp_path / "eval")
    controls = paragraph_controls(json.loads((data / "paragraph_train.json").read_text()), gallery)
    record("paragraph", {f"{name}/{key}": round(value, 3) for name, values in scores.items() for key, value in values.items()
                         if key.split("/")[1] in ("recall", "precision", "IR@1")} | controls)
    check_paragraphs(scores, controls)
