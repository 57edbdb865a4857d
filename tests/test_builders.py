"""Every builder reads its layout (written by dataset/example_formats.py) into correctly masked samples."""
import collections
import itertools
import json
import pickle
import re

import pytest

from conftest import dataset_config
from minigpt.conversation.collator import IGNORE_INDEX, ConversationCollator
from minigpt.conversation.template import ASSISTANT, PromptTemplate
from minigpt.datasets.builders.base import build_dataset
from minigpt.models.tokenizer import load_tokenizer

LLAMA2_V2 = PromptTemplate("[INST] {} [/INST] ", "</s>", task_identifiers=True)
TASKS = {"coco_caption": "caption", "textcaps": "caption", "refcoco": "refer", "ok_vqa": "vqa", "aok_vqa": "vqa",
         "gqa": "vqa", "ocrvqa": "vqa", "vizwiz": "vqa", "vsr": "vqa", "iconqa": "vqa"}


@pytest.fixture(scope="module")
def tokenizer(shapes_dir):
    return load_tokenizer(shapes_dir / "tokenizer")


def built(tmp_path, shapes_dir, datasets):
    config, _ = dataset_config(tmp_path, shapes_dir, datasets)
    return {name: build_dataset(name, section) for name, section in config.datasets.items()}


def first_samples(dataset, count=6):
    return list(itertools.islice(iter(dataset), count)) if not hasattr(dataset, "__len__") else \
        [dataset[i] for i in range(min(count, len(dataset)))]


@pytest.mark.parametrize("name", ["laion", "cc_sbu_align", "sharegpt4v", "llava_detail", "face_annotations",
                                  "coco_caption", "textcaps", "refcoco", "ok_vqa", "aok_vqa", "gqa", "ocrvqa",
                                  "vizwiz", "vsr", "hateful_memes", "iconqa"])
def test_builder_yields_samples_supervised_on_answers_only(tmp_path, shapes_dir, formats, tokenizer, name):
    dataset = built(tmp_path, shapes_dir, {name: formats[name]})[name]
    samples = first_samples(dataset)
    assert samples and all("skip" not in s for s in samples)
    collator = ConversationCollator(tokenizer, LLAMA2_V2, num_image_tokens=4, max_txt_len=400)
    batch = collator(samples)
    assert batch["ids"] == [str(s["id"]) for s in samples] and not batch["skipped"]
    for row, sample in enumerate(samples):
        assert sample["dataset"] == name and sample.get("task") == TASKS.get(name)
        answers = "".join(text + "</s>" for role, text in sample["turns"] if role == ASSISTANT)
        labels = batch["labels"][row]
        assert tokenizer.decode(labels[labels != IGNORE_INDEX]).replace(" ", "") == answers.replace(" ", "")
        prompt = tokenizer.decode(batch["input_ids"][row][labels == IGNORE_INDEX], skip_special_tokens=True)
        if sample["image"] is not None:
            assert sample["image"].shape == (3, 64, 64) and batch["image_slots"][row].sum() == 4
            assert "<Img>" in prompt
        if sample.get("task"):
            assert f"[{sample['task']}]" in prompt


def test_grounding_answers_are_scaled_box_tokens(tmp_path, shapes_dir, formats):
    dataset = built(tmp_path, shapes_dir, {"refcoco": formats["refcoco"]})["refcoco"]
    refer_dir = formats["refcoco"]["build_info"]["ann_path"] + "/refcoco"
    instances = json.loads(open(f"{refer_dir}/instances.json").read())
    refs = {ref["ref_id"]: ref for ref in pickle.loads(open(f"{refer_dir}/refs(unc).p", "rb").read())}
    boxes = {a["id"]: a["bbox"] for a in instances["annotations"]}
    sizes = {image["id"]: (image["width"], image["height"]) for image in instances["images"]}
    for index in range(len(dataset)):
        sample = dataset[index]
        ref = refs[int(sample["id"])]
        x, y, w, h = boxes[ref["ann_id"]]
        width, height = sizes[ref["image_id"]]
        assert width != height and sample["image"].shape == (3, 64, 64)
        expected = [int(x / width * 100), int(y / height * 100), int((x + w) / width * 100), int((y + h) / height * 100)]
        answer = sample["turns"][1][1]
        assert re.fullmatch(r"\{(<\d{1,3}>){4}\}", answer) and [int(v) for v in re.findall(r"\d+", answer)] == expected
        assert any(s["sent"] in sample["turns"][0][1] for s in ref["sentences"])
    identify = built(tmp_path, shapes_dir, {"refcoco": {**formats["refcoco"], "task": "identify"}})["refcoco"][0]
    assert identify["task"] == "identify" and re.search(r"\{(<\d+>){4}\}", identify["turns"][0][1])
    assert re.fullmatch(r"(the )?\w+ \w+", identify["turns"][1][1])


def test_vqa_answer_is_drawn_by_annotator_agreement(tmp_path, shapes_dir, formats):
    dataset = built(tmp_path, shapes_dir, {"ok_vqa": formats["ok_vqa"]})["ok_vqa"]
    drawn = collections.Counter()
    for pass_index in range(300):
        dataset.set_pass(seed=0, pass_index=pass_index)
        drawn[dataset[0]["turns"][1][1]] += 1
    assert 0.7 < 1 - drawn["not sure"] / 300 < 0.9  # 8 of 10 annotators gave the main answer
    dataset.set_pass(seed=0, pass_index=5)
    assert dataset[0]["turns"] == dataset[0]["turns"]  # reproducible within a pass


def test_sharegpt_subsample_and_text_only_records(tmp_path, shapes_dir, formats):
    section = formats["sharegpt4v"]
    dataset = built(tmp_path, shapes_dir, {"sharegpt4v": section})["sharegpt4v"]
    text_only = [dataset[i] for i in range(len(dataset)) if dataset.records[i]["image"] is None]
    assert len(text_only) == 1 and text_only[0]["image"] is None and text_only[0]["turns"][1] == (ASSISTANT, "red")
    by_count = built(tmp_path, shapes_dir, {"sharegpt4v": {**section, "subsample_count": 5}})["sharegpt4v"]
    by_ids = built(tmp_path, shapes_dir, {"sharegpt4v": {**section, "subsample_ids": ["sg-2", "sg-7"]}})["sharegpt4v"]
    assert len(by_count) == 5 and [r["id"] for r in by_ids.records] == ["sg-2", "sg-7"]


def test_two_files_of_one_format_under_two_names(tmp_path, shapes_dir, formats):
    datasets = built(tmp_path, shapes_dir, {"gpt4v": {**formats["sharegpt4v"], "builder": "sharegpt4v"},
                                            "captioner": {**formats["llava_detail"], "builder": "sharegpt4v"}})
    assert len(datasets["gpt4v"]) == 13 and len(datasets["captioner"]) == 12
    assert datasets["captioner"][0]["dataset"] == "captioner"


def test_face_sections_are_selected_weighted_and_counted(tmp_path, shapes_dir, formats, capsys):
    section = formats["face_annotations"]
    dataset = built(tmp_path, shapes_dir, {"face_annotations": section})["face_annotations"]
    assert len(dataset) == 36
    out = capsys.readouterr().out
    assert "Gender: 12 records x 1 -> 12 samples per pass" in out and "Posture: 12 records x 1 -> 12 samples per pass" in out
    weighted = {**section, "sections": {"Gender": {"weight": 2.0}, "Posture": {"weight": 0.5}}}
    dataset = built(tmp_path, shapes_dir, {"face_annotations": weighted})["face_annotations"]
    sections = collections.Counter(r["section"] for r in dataset.records)
    assert sections == {"Gender": 24, "Posture": 6, "Feature by Feature Description": 12}
    assert len({r["id"] for r in dataset.records}) == len(dataset.records)  # copies get their own ids
    posture = {r["id"] for r in dataset.records if r["section"] == "Posture"}
    dataset.set_pass(seed=0, pass_index=1)  # the half of Posture that trains changes from pass to pass
    assert len(dataset) == 42 and {r["id"] for r in dataset.records if r["section"] == "Posture"} != posture
    selected = built(tmp_path, shapes_dir, {"face_annotations": {**section, "select": ["Gender"]}})["face_annotations"]
    assert {r["section"] for r in selected.records} == {"Gender"}
    # a record without a question asks one of its section's instructions from the YAML
    feature = next(selected_sample for selected_sample in (dataset[i] for i in range(len(dataset)))
                   if selected_sample["id"].endswith("-2"))
    assert feature["turns"][0][1].startswith("Describe the face feature by feature")


def test_face_data_in_sharegpt_layout(tmp_path, shapes_dir, formats):
    records = [{"id": "f1", "image": "img_000000.jpg", "section": "Gender",
                "conversations": [{"from": "human", "value": "<image>\nMan or woman?"}, {"from": "gpt", "value": "woman"}]},
               {"id": "f2", "image": "img_000001.jpg",
                "conversations": [{"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "a face"}]}]
    path = tmp_path / "faces.json"
    path.write_text(json.dumps(records))
    image_path = formats["sharegpt4v"]["build_info"]["image_path"]
    dataset = built(tmp_path, shapes_dir, {"face_annotations": {"build_info": {"ann_path": str(path),
                                                                               "image_path": image_path}}})["face_annotations"]
    assert sorted(r["section"] for r in dataset.records) == ["Gender", "unsectioned"]
    assert dataset[0]["turns"] == [("user", "Man or woman?"), ("assistant", "woman")]


def test_resampled_shards_stream_endlessly(tmp_path, shapes_dir, formats):
    dataset = built(tmp_path, shapes_dir, {"laion": {**formats["laion"], "resampled": True}})["laion"]
    samples = list(itertools.islice(iter(dataset), 40))  # the shards hold only 12 samples
    assert len(samples) == 40 and len({s["id"] for s in samples}) <= 12


def test_ocrvqa_keeps_only_the_configured_splits(tmp_path, shapes_dir, formats):
    assert len(built(tmp_path, shapes_dir, {"ocrvqa": formats["ocrvqa"]})["ocrvqa"]) == 24
    assert len(built(tmp_path, shapes_dir, {"ocrvqa": {**formats["ocrvqa"], "splits": [2, 3]}})["ocrvqa"]) == 0


def test_a_missing_field_names_the_file_record_and_field(tmp_path, shapes_dir, formats):
    records = json.loads(open(formats["gqa"]["build_info"]["ann_path"]).read())  # GQA: keyed by question id
    del records["g1"]["answer"]
    path = tmp_path / "gqa.json"
    path.write_text(json.dumps(records))
    section = {"build_info": {**formats["gqa"]["build_info"], "ann_path": str(path)}}
    with pytest.raises(ValueError, match=r"gqa\.json: record 1 \(id 'g1'\): missing field 'answer'"):
        built(tmp_path, shapes_dir, {"gqa": section})


def test_coco_captions_keep_train2014_unless_asked(tmp_path, shapes_dir, formats):
    default = built(tmp_path, shapes_dir, {"coco_caption": formats["coco_caption"]})["coco_caption"]
    assert len(default) == 12 and all("train2014" in r["image"] for r in default.records)
    everything = built(tmp_path, shapes_dir, {"coco_caption": {**formats["coco_caption"], "image_path_contains": None}})
    dataset = everything["coco_caption"]
    assert len(dataset) == 13 and dataset[12]["skip"][0] == "missing image"


def test_refcocop_and_inverse_sections_read_the_refcoco_plus_folder(tmp_path, shapes_dir, formats):
    root = tmp_path / "refer"
    (root / "refcoco+").mkdir(parents=True)
    source = formats["refcoco"]["build_info"]["ann_path"] + "/refcoco"
    for name in ("refs(unc).p", "instances.json"):
        (root / "refcoco+" / name).write_bytes(open(f"{source}/{name}", "rb").read())
    section = {"build_info": {"ann_path": str(root), "image_path": formats["refcoco"]["build_info"]["image_path"]}}
    datasets = built(tmp_path, shapes_dir, {"refcocop": section,
                                            "invrefcoco+": {**section, "builder": "refcoco+", "task": "identify"}})
    assert len(datasets["refcocop"]) == len(datasets["invrefcoco+"]) > 0
    assert datasets["invrefcoco+"][0]["task"] == "identify"
    with pytest.raises(ValueError, match=r"refcoco/refs\(unc\)\.p"):  # plain refcoco looks in its own folder
        built(tmp_path, shapes_dir, {"refcoco": section})


def test_fixed_answer_benchmarks_read_their_released_layouts(tmp_path, shapes_dir, formats):
    """VizWiz's answer objects, VSR's and Hateful Memes' 0/1 labels, IconQA's choices (released problems.json
    with answer indices, or MiniGPT-v2's converted list with answer texts)."""
    import random

    from minigpt.common import registry

    def records(name, section):
        config, _ = dataset_config(tmp_path, shapes_dir, {name: section})
        return registry.get("builder", name)(name, config.datasets[name]).records()

    def source(name):
        path = formats[name]["build_info"]["ann_path"]
        text = open(path).read()
        return [json.loads(line) for line in text.splitlines()] if path.endswith(".jsonl") else json.loads(text)

    vizwiz = records("vizwiz", formats["vizwiz"])
    assert [r["answers"] for r in vizwiz] == [[a["answer"] for a in q["answers"]] for q in source("vizwiz")]
    assert "unanswerable" in {r["answers"][0] for r in vizwiz}
    vsr = records("vsr", formats["vsr"])
    assert [r["answers"] for r in vsr] == [["true" if q["label"] else "false"] for q in source("vsr")]
    assert vsr[0]["question"] == source("vsr")[0]["caption"]
    memes = records("hateful_memes", formats["hateful_memes"])
    assert [(r["id"], r["image"], r["answers"]) for r in memes] == \
           [(str(q["id"]), q["img"], ["yes" if q["label"] else "no"]) for q in source("hateful_memes")]
    sample = registry.get("builder", "hm")("hm", dataset_config(tmp_path, shapes_dir, {"hateful_memes": formats["hateful_memes"]})[0]
                                           .datasets.hateful_memes).make_sample(memes[0], random.Random(0))
    assert sample["task"] is None and sample["turns"][0][1].endswith("Is it hateful? Answer yes or no.")

    problems = source("iconqa")
    iconqa = records("iconqa", formats["iconqa"])
    assert len(iconqa) == len(problems) - 1  # the choose_img problem is not read
    assert all(r["answers"] == [problems[r["id"]]["choices"][problems[r["id"]]["answer"]]] for r in iconqa)
    assert iconqa[0]["choices"] == problems["0"]["choices"] and iconqa[0]["image"] == "0/image.png"
    with pytest.raises(ValueError, match=r"iconqa_problems.json: no problem has ques_type 'choose_txt' and split 'val'"):
        records("iconqa", {**formats["iconqa"], "split": "val"})
    converted = tmp_path / "iconqa_val.json"  # MiniGPT-v2's layout: a list, answers as text
    converted.write_text(json.dumps([{"image_id": "0", "question": "How many?", "choices": ["one", "two"], "answer": "two"}]))
    build_info = {**formats["iconqa"]["build_info"], "ann_path": str(converted)}
    assert records("iconqa", {"build_info": build_info})[0]["answers"] == ["two"]
    converted.write_text(json.dumps([{"image_id": "0", "question": "How many?", "choices": ["one", "two"], "answer": "six"}]))
    with pytest.raises(ValueError, match=r"iconqa_val.json: record 0 \(id '0'\).*'answer' must be one of the choices .*'six'"):
        records("iconqa", {"build_info": build_info})
    converted.write_text(json.dumps([{"image_id": "0", "question": "How many?", "choices": None, "answer": "two"}]))
    with pytest.raises(ValueError, match=r"record 0 \(id '0'\).*'choices' must list at least two, got None"):
        records("iconqa", {"build_info": build_info})
    released = tmp_path / "problems.json"
    released.write_text(json.dumps({"7": {"question": "?", "choices": ["a", "b"], "answer": True, "ques_type": "choose_txt",
                                          "split": "train"}}))
    with pytest.raises(ValueError, match=r"problems.json \(id '7'\).*'answer' must be the index of one of the 2 choices, got True"):
        records("iconqa", {**formats["iconqa"], "build_info": {**build_info, "ann_path": str(released)}})
    broken = tmp_path / "vsr.jsonl"
    broken.write_text(json.dumps({"image": "a.jpg", "caption": "x", "label": 2}) + "\n")
    with pytest.raises(ValueError, match=r"vsr.jsonl: record 0.*field 'label' must be 0 or 1, got 2"):
        records("vsr", {"build_info": {**formats["vsr"]["build_info"], "ann_path": str(broken)}})
