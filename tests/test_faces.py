"""The face-description flow: synthetic faces and their sections, the face builder's handling of bad
annotations, the per-section attribute scores, the published configs and the describe_faces template."""
import json

import numpy as np
import pytest
import skimage.data
from omegaconf import OmegaConf
from PIL import Image

from conftest import dataset_config
from minigpt.agents.classical import classical_tools
from minigpt.agents.images import ImageStore
from minigpt.agents.templates import find_template
from minigpt.agents.tool import IMAGE, Tool, Toolbox
from minigpt.cli.main import main
from minigpt.config.loader import find_config
from minigpt.datasets.annotations import AnnotationError
from minigpt.datasets.builders.base import build_dataset
from minigpt.evaluation.attribute_metrics import score_attributes
from minigpt.synthetic.face_sections import SECTIONS
from minigpt.synthetic.faces import generate

ASTRONAUT_FACE = [177, 67, 270, 160]


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faces")
    generate(folder, seed=0, train_images=60, test_images=20, stage1_images=20)
    return folder


def test_synthetic_faces_are_seeded_sectioned_and_never_about_gender_or_ethnicity(faces_dir, tmp_path):
    train = json.loads((faces_dir / "face_train.json").read_text())
    test = json.loads((faces_dir / "face_test.json").read_text())
    generate(tmp_path, seed=0, train_images=60, test_images=20, stage1_images=20)
    assert (tmp_path / "face_train.json").read_text() == (faces_dir / "face_train.json").read_text()
    assert {r["section"] for r in train} == set(SECTIONS)
    assert not {"Gender", "Race", "Race and Gender"} & {r["section"] for r in train + test}
    fitzpatrick = [r["answer"] for r in train if r["section"] == "Fitzpatrick"]
    assert len({answer.replace(answer.split("type ")[-1].split()[0], "X") for answer in fitzpatrick}) >= 2
    assert all(r["attributes"] and r["answer"] for r in test)
    detailed = json.loads((faces_dir / "face_detailed.json").read_text())
    assert len(detailed) == 60 and detailed[0]["conversations"][0]["value"].startswith("<image>")


def face_builder(tmp_path, faces_dir, records, **options):
    path = tmp_path / "faces.json"
    path.write_text(json.dumps(records))
    section = {"build_info": {"ann_path": str(path), "image_path": str(faces_dir / "images")}, **options}
    config, _ = dataset_config(tmp_path, faces_dir, {"face_annotations": section})
    return build_dataset("face_annotations", config.datasets.face_annotations)


def record(number, section="Fitzpatrick", answer="Type II.", image="train_000000.png"):
    return {"id": f"r{number}", "image": image, "section": section, "question": "Which type?", "answer": answer}


def test_sections_match_whatever_their_spacing_and_case(tmp_path, faces_dir, capsys):
    records = [record(1, "fitzpatrick"), record(2, "Human  or NOT", "Yes."), record(3, "Human or not", "No.")]
    dataset = face_builder(tmp_path, faces_dir, records, select=["FITZPATRICK", "human or not"])
    assert sorted(r["section"] for r in dataset.records) == ["Fitzpatrick", "Human or not", "Human or not"]
    assert "Human or not: 2 records" in capsys.readouterr().out


def test_bad_face_annotations_get_a_clear_message_or_a_counted_skip(tmp_path, faces_dir, capsys):
    with pytest.raises(AnnotationError, match=r"record 1 \(id 'r1'\): id repeats record 0 with a different"):
        face_builder(tmp_path, faces_dir, [record(1), record(1, answer="Type V.")])
    dataset = face_builder(tmp_path, faces_dir, [record(1), record(1), record(2)])
    assert len(dataset) == 2 and "1 exact repeats of earlier records left out" in capsys.readouterr().out
    with pytest.raises(AnnotationError, match=r"record 1 \(id 'r2'\): field 'answer' must be a non-empty string"):
        face_builder(tmp_path, faces_dir, [record(1), record(2, answer="  ")])
    with pytest.raises(AnnotationError, match=r"select names sections with no records: \['Posture'\]"):
        face_builder(tmp_path, faces_dir, [record(1)], select=["Posture"])
    with pytest.raises(AnnotationError, match="no sample left after select and section weights"):
        face_builder(tmp_path, faces_dir, [record(1)], sections={"Fitzpatrick": {"weight": 0}})


def test_require_face_skips_and_counts_images_without_a_face(tmp_path, faces_dir):
    Image.fromarray(skimage.data.astronaut()).save(faces_dir / "images" / "astronaut.png")
    Image.fromarray(skimage.data.coffee()).save(faces_dir / "images" / "coffee.png")
    records = [record(1, image="astronaut.png"), record(2, image="coffee.png")]
    dataset = face_builder(tmp_path, faces_dir, records, require_face=True)
    samples = {dataset[i]["id"]: dataset[i] for i in range(len(dataset))}
    assert "image" in samples["r1"] and samples["r2"]["skip"][0] == "no face found in the image"
    assert "image" in face_builder(tmp_path, faces_dir, records)[1]  # checked only when asked


def test_attribute_scores_per_section_with_wrong_values_and_chance():
    references = [{"section": "Fitzpatrick", "attributes": {"skin": value}} for value in ("ii", "v", "iii")]
    references += [{"section": "Short", "attributes": {"hair": "red", "eyes": "blue"}},
                   {"section": "Short", "attributes": {"hair": "black", "eyes": "green"}}]
    answers = ["Type II.", "Type III on the scale.", "type iii or v", "A face with red hair and blue eyes.", "Black hair."]
    scores, per_item = score_attributes(answers, references)
    assert [item["match"] for item in per_item] == [1.0, 0.0, 0.0, 1.0, 0.0]  # "iii or v" names a wrong value too
    assert [item["wrong"] for item in per_item] == [0.0, 1.0, 1.0, 0.0, 0.0]
    assert scores["Fitzpatrick/match"] == pytest.approx(1 / 3) and scores["Fitzpatrick/chance"] == pytest.approx(1 / 3)
    assert scores["Short/soft"] == 0.75 and scores["Short/chance"] == 0.5
    with pytest.raises(ValueError, match="need 'attributes'"):
        score_attributes(["x"], [{"answers": ["x"]}])


@pytest.mark.parametrize("name", ["minigpt4_stage2_finetune_gpt4vision", "minigptv2_finetune_gpt4vision"])
def test_the_published_face_configs_mix_sharegpt4v_and_face_sections_with_accumulation_8(name):
    """Their paths are the user's to fill in (tests/test_config.py loads every shipped config)."""
    config = OmegaConf.load(find_config(name))
    assert config.run.accum_grad_iters == 8 and config.run.num_workers == 1
    assert set(config.datasets) == {"sharegpt4v", "share_captioner", "face_annotations"}
    assert find_config("minigptv2_finetune").read_text() == find_config("minigptv2_stage3_finetune").read_text()


@pytest.mark.parametrize("name", ["tiny_minigpt4_finetune_gpt4vision", "tiny_minigptv2_finetune_gpt4vision"])
def test_the_tiny_face_configs_check_their_data(name, faces_dir):
    options = [f"model.tokenizer={faces_dir}/tokenizer", "model.ckpt=null"] + [
        f"datasets.{section}.build_info.{key}={faces_dir / file}" for section, file in
        (("face_annotations", "face_train.json"), ("sharegpt4v", "face_detailed.json")) for key, file in
        (("ann_path", file), ("image_path", "images"))]
    assert main(["check-data", "--cfg-path", name, "--options", *options]) == 0


def stand_in_vqa() -> Tool:
    def vqa(context, args):
        pixels = context.image(args["image"])
        return {"answer": f"{args['question']} -> a face {pixels.shape[1]} pixels wide"}
    schema = {"type": "object", "properties": {"image": IMAGE, "question": {"type": "string"}},
              "required": ["image", "question"], "additionalProperties": False}
    return Tool("vqa", "stand-in", schema, vqa)


def test_describe_faces_template_answers_the_face_questions_for_each_face(tmp_path):
    store = ImageStore(tmp_path)
    toolbox = Toolbox(classical_tools() + [stand_in_vqa()], store)
    template = find_template("describe_faces")
    template.check(toolbox)
    output = template.run(toolbox, {"image": store.add(skimage.data.astronaut())})
    assert output["count"] == 1 and np.abs(np.subtract(output["boxes"][0], ASTRONAUT_FACE)).max() <= 10
    assert output["expressions"][0]["answer"].startswith("What expression does the person show? -> a face 93")
    assert set(output) == {"count", "boxes", "expressions", "glasses", "descriptions"}
