"""The face-description finetune learns each section from the image, and `select` steers what it learns.

On synthetic faces: tiny_v2_stage1 pretrained on the folder's shapes shards, then the tiny MiniGPT-v2 face
finetune (tiny_minigptv2_finetune_gpt4vision.yaml) through train.py, scored per section by eval.py on
held-out faces and on the same questions about a blank image. A second finetune leaves Fitzpatrick out by
`select`; that section then stays near chance while the count, which it kept, is learned.

To fit the test into a few minutes, both finetunes train on the five sections the test checks and leave
out the detailed descriptions (the config's sharegpt4v part); the second one runs
300 steps, long enough to learn the count (glasses and human-or-not take longer on some seeds).
Every section must beat, by a margin, the strongest of its controls (tests/learning_controls.py): the
best constant answer among the training answers, chance, another face's right answer, and the model given
blank and shuffled images; an answer counts only when it names the truth and no other value.
LEARNING_SEED / LEARNING_DATA_SEED pick the seeds (see tests/test_learning.py).
"""
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import REPO, TRAINING_TIMEOUT_S, run_script
from learning_controls import DATA_SEED, TRAINING_SEED, assert_beats, data_controls, record
from minigpt.evaluation.attribute_metrics import score_attributes
from minigpt.synthetic.faces import generate
from test_learning import eval_scores, first_and_last_loss, shuffled_images, with_images

SEED = TRAINING_SEED
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
                f"datasets.face_annotations.select=[{quoted}]", *SEED], timeout=TRAINING_TIMEOUT_S)
    first, last = first_and_last_loss(out)
    assert last < 0.3 * first, f"{out.name}: loss {first:.3f} -> {last:.3f}"


def section_match(predictions: list[str], references: list[dict]) -> float:
    return score_attributes(predictions, references)[0]["match"]


def face_controls(data: Path) -> dict[str, dict[str, float]]:
    """Per learned section, the data-only controls: training answers given to every held-out face."""
    train, test = (json.loads((data / f"face_{split}.json").read_text()) for split in ("train", "test"))
    controls = {}
    for section in LEARNED:
        held_out = [r for r in test if r["section"] == section]
        references = [{"section": section, "attributes": r["attributes"]} for r in held_out]
        controls[section] = data_controls([r["answer"] for r in train if r["section"] == section], references,
                                          section_match, truths=[r["answer"] for r in held_out])
    return controls


def check_faces(scores: dict[str, dict], controls: dict[str, dict[str, float]]) -> None:
    """scores: eval sections of the full finetune (faces, blank, shuffled) and of the `select` one
    (select, select_blank), each with "<section>/match"."""
    runs = {"faces": {"blank image": "blank", "shuffled images": "shuffled"}, "select": {"blank image": "select_blank"}}

    def image_controls(run: str, section: str) -> dict[str, float]:
        return {f"{run} {kind}": scores[key][f"{section}/match"] for kind, key in runs[run].items()}

    for section in LEARNED:  # 0.10: below the worst section of the sweep (expression, data seed 2: +0.140)
        assert_beats(section, scores["faces"][f"{section}/match"], {**controls[section], **image_controls("faces", section)},
                     margin=0.10)
    count = "Number of Faces"  # the run with the shorter list learned from the image what it kept ...
    assert_beats(f"select: {count}", scores["select"][f"{count}/match"], {**controls[count], **image_controls("select", count)},
                 margin=0.15)
    left_out = scores["select"][f"{LEFT_OUT}/match"]  # ... and not what it left out
    assert left_out <= max(controls[LEFT_OUT].values()) + 0.1, f"select: {LEFT_OUT} {left_out:.3f} learned all the same"
    assert left_out <= scores["faces"][f"{LEFT_OUT}/match"] - 0.3


def eval_sections(data: Path, test: list[dict]) -> list[str]:
    """eval.py options for the held-out faces as they are, on a blank image and on shuffled images."""
    Image.new("RGB", (64, 64), (255, 255, 255)).save(data / "images" / "blank.png")
    variants = {"faces": test, "blank": with_images(test, lambda index: "blank.png"), "shuffled": shuffled_images(test)}
    options = []
    for name, records in variants.items():
        (data / f"{name}.json").write_text(json.dumps(records))
        options += [f"evaluation_datasets.{name}.build_info.ann_path={data / f'{name}.json'}",
                    f"evaluation_datasets.{name}.build_info.image_path={data / 'images'}"]
        if name != "faces":
            options += [f"evaluation_datasets.{name}.{key}" for key in (
                "builder=face_annotations", "metric=attributes", "max_new_tokens=24",
                "vis_processor.eval.name=blip2_image_eval", "vis_processor.eval.image_size=64")]
    return options


@pytest.mark.slow
def test_face_sections_are_learned_from_the_image_and_select_steers_them(tmp_path):
    data, out = tmp_path / "faces", tmp_path / "output"
    generate(data, seed=DATA_SEED, train_images=1500, test_images=100)
    tokenizer = f"model.tokenizer={data}/tokenizer"
    run_script(["train.py", "--cfg-path", "train_configs/tiny_v2_stage1.yaml", "--options", tokenizer,
                f"datasets.cc_sbu.build_info.storage={data}/shards/shapes-{{000000..000003}}.tar",
                f"run.output_dir={out}/stage1", "run.iters_per_epoch=200", *SEED], timeout=TRAINING_TIMEOUT_S)
    config = finetune_config(data, tmp_path / "finetune.yaml")
    finetune(config, data, out / "all", list(LEARNED), FINETUNE_STEPS)
    kept = [section for section in LEARNED if section != LEFT_OUT]
    finetune(config, data, out / "select", kept, SELECT_STEPS)

    test = [r for r in json.loads((data / "face_test.json").read_text()) if r["section"] in LEARNED]
    sections = eval_sections(data, test)
    full = eval_scores(EVAL_CONFIG, [tokenizer, f"model.ckpt={out / 'all'}", *sections], tmp_path / "eval_all")
    steered = eval_scores(EVAL_CONFIG, [tokenizer, f"model.ckpt={out / 'select'}", *sections], tmp_path / "eval_select",
                          datasets=("faces", "blank"))
    scores = {**full, "select": steered["faces"], "select_blank": steered["blank"]}
    controls = face_controls(data)
    record("faces", {f"{run}/{section}": round(scores[run][f"{section}/match"], 3) for run in scores for section in LEARNED}
           | {f"{kind}/{section}": round(value, 3) for section, values in controls.items() for kind, value in values.items()})
    check_faces(scores, controls)
