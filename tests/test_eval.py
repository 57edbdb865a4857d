"""eval.py: builders' questions and references, config checks, answering, scoring, resuming, ranks."""
import json
import os
import sys

import pytest
from omegaconf import OmegaConf
from PIL import Image

from conftest import REPO, free_port, run_script
from minigpt.common import registry
from minigpt.common.errors import ConfigError
from minigpt.config.loader import load_config
from minigpt.conversation.template import ASSISTANT, USER, PromptTemplate

TORCHRUN = os.path.join(os.path.dirname(sys.executable), "torchrun")


def eval_config(tmp_path, shapes_dir, sections: dict, base: str = "eval_configs/tiny_v2_eval.yaml", **run):
    """The tiny v2 model (random weights) with `sections` as its evaluation_datasets; -> (config, path)."""
    config = OmegaConf.load(REPO / base)
    config.model.tokenizer = str(shapes_dir / "tokenizer")
    config.model.ckpt = None
    config.evaluation_datasets = sections
    config.run.output_dir = str(tmp_path / "eval")
    for key, value in run.items():
        config.run[key] = value
    path = tmp_path / "eval.yaml"
    OmegaConf.save(config, path)
    return load_config(path, for_training=False, for_evaluation=True), path


def items_of(config, name: str) -> tuple[list[dict], str]:
    section = config.evaluation_datasets[name]
    builder = registry.get("builder", section.builder)(name, section)
    return builder.eval_items(builder.records(), section.instruction), section.metric or builder.eval_metric()


def shapes_sections(shapes_dir, count: int = 12) -> dict:
    images = str(shapes_dir / "images")
    return {"refer": {"builder": "sharegpt4v", "metric": "refer_accuracy", "max_new_tokens": 8, "batch_size": 4,
                      "subsample_count": count,
                      "build_info": {"ann_path": str(shapes_dir / "grounding_test.json"), "image_path": images}},
            "vqa": {"builder": "sharegpt4v", "task": "vqa", "max_new_tokens": 4, "batch_size": 5, "subsample_count": count,
                    "build_info": {"ann_path": str(shapes_dir / "test.json"), "image_path": images}}}


def test_builders_give_fixed_questions_and_every_reference(tmp_path, shapes_dir, formats):
    karpathy_test = tmp_path / "coco_karpathy_test.json"  # the val / test layout: one entry per image
    karpathy_test.write_text(json.dumps([{"image": "train2014/img_000000.jpg", "caption": ["a", "b", "c"]},
                                         {"image": "train2014/img_000001.jpg", "caption": ["d", "e"]}]))
    coco = {**formats["coco_caption"], "build_info": {**formats["coco_caption"]["build_info"], "ann_path": str(karpathy_test)}}
    config, _ = eval_config(tmp_path, shapes_dir, {
        "okvqa": formats["ok_vqa"], "gqa": formats["gqa"], "refcoco": {**formats["refcoco"], "split": "train"},
        "refcoco_own_words": {**formats["refcoco"], "builder": "refcoco", "instruction": "Point at {}"},
        "captions": {**coco, "builder": "coco_caption", "image_path_contains": None},
        "conversations": {**formats["sharegpt4v"], "builder": "sharegpt4v"}})

    okvqa, metric = items_of(config, "okvqa")
    assert metric == "vqa_accuracy" and len(okvqa) == 12
    source = json.loads(open(formats["ok_vqa"]["build_info"]["ann_path"]).read())[0]
    assert okvqa[0]["turns"] == [(USER, f"Based on the image, answer this question with a short answer: {source['question']}")]
    assert okvqa[0]["reference"]["answers"] == source["answer"] and okvqa[0]["task"] == "vqa"
    assert items_of(config, "gqa")[1] == "exact_match"

    refer, metric = items_of(config, "refcoco")
    refs = json.loads(open(formats["refcoco"]["build_info"]["ann_path"] + "/refcoco/instances.json").read())
    first_box = refs["annotations"][0]["bbox"]
    assert metric == "refer_accuracy" and len(refer) == 2 * len(refs["annotations"])  # one per expression
    assert refer[0]["turns"][0][1].startswith("Give me the location of the ") and refer[0]["task"] == "refer"
    assert refer[0]["reference"] == {"box": [first_box[0], first_box[1], first_box[0] + first_box[2],
                                             first_box[1] + first_box[3]]}
    assert items_of(config, "refcoco_own_words")[0][0]["turns"][0][1].startswith("Point at the ")

    captions, metric = items_of(config, "captions")
    assert metric == "caption" and [item["reference"]["captions"] for item in captions] == [["a", "b", "c"], ["d", "e"]]

    conversation, metric = items_of(config, "conversations")
    assert metric == "exact_match" and [item["id"] for item in conversation[:2]] == ["sg-0#0", "sg-0#1"]
    first, second = conversation[0], conversation[1]
    assert second["turns"][:2] == [first["turns"][0], (ASSISTANT, first["reference"]["answers"][0])]  # history
    assert conversation[-1]["image"] is None  # the text-only record


def test_fixed_answer_benchmarks_are_scored_and_iconqa_chooses_among_its_choices(tmp_path, shapes_dir, formats):
    from minigpt.runners.eval_recipe import evaluate

    names = ("vizwiz", "vsr", "hateful_memes", "iconqa")
    config, path = eval_config(tmp_path, shapes_dir, {name: {**formats[name], "max_new_tokens": 3, "batch_size": 4,
                                                             "subsample_count": 6} for name in names})
    results = evaluate(config, str(path))
    assert {name: results[name]["metric"] for name in names} == {
        "vizwiz": "vqa_accuracy", "vsr": "exact_match", "hateful_memes": "exact_match", "iconqa": "exact_match"}
    predictions = {name: json.loads((tmp_path / "eval" / name / "predictions.json").read_text()) for name in names}
    assert all(len(p) == 6 and results[name]["answered"] == 6 for name, p in predictions.items())
    assert "'unanswerable' when the image does not tell" in predictions["vizwiz"][0]["question"]
    iconqa = predictions["iconqa"]
    assert all(p["answer"] in p["choices"] and len(p["choices"]) >= 2 for p in iconqa)
    assert results["iconqa"]["scores"]["exact_match"] == pytest.approx(
        sum(p["answer"] == p["reference"]["answers"][0] for p in iconqa) / 6)


def test_eval_config_problems_name_the_key(tmp_path, shapes_dir, formats):
    sections = shapes_sections(shapes_dir)
    with pytest.raises(ConfigError, match=r"evaluation_datasets\.refer\.metric: 'bleu' is not one of"):
        eval_config(tmp_path, shapes_dir, {"refer": {**sections["refer"], "metric": "bleu"}})
    with pytest.raises(ConfigError, match=r"evaluation_datasets\.shards\.builder: 'laion' reads webdataset shards"):
        eval_config(tmp_path, shapes_dir, {"shards": {"builder": "laion", **formats["laion"]}})
    with pytest.raises(ConfigError, match=r"evaluation_datasets\.gqa\.eval_file_path: path '/nowhere.json' does not exist"):
        eval_config(tmp_path, shapes_dir, {"gqa": {**formats["gqa"], "eval_file_path": "/nowhere.json"}})
    with pytest.raises(ConfigError, match=r"evaluation_datasets\.vqa\.max_new_tokens: must be >= 1"):
        eval_config(tmp_path, shapes_dir, {"vqa": {**sections["vqa"], "max_new_tokens": 0}})
    with pytest.raises(ConfigError, match=r"evaluation_datasets\.vqa\.choice_scoring: 'best' is not one of total"):
        eval_config(tmp_path, shapes_dir, {"vqa": {**sections["vqa"], "choice_scoring": "best"}})


def test_chosen_sections_need_only_their_own_files(tmp_path, shapes_dir):
    """eval.py --datasets a: another section's missing files do not stop it, but they do when all are evaluated."""
    sections = shapes_sections(shapes_dir)
    sections["elsewhere"] = {**sections["vqa"], "build_info": {"ann_path": "/nowhere.json", "image_path": "/nowhere"}}
    with pytest.raises(ConfigError, match=r"elsewhere\.build_info\.ann_path: path '/nowhere.json' does not exist"):
        eval_config(tmp_path, shapes_dir, sections)
    path = tmp_path / "eval.yaml"
    config = load_config(path, for_training=False, for_evaluation=True, evaluation_names=["vqa"])
    assert set(config.evaluation_datasets) == {"refer", "vqa", "elsewhere"}
    with pytest.raises(ConfigError, match=r"evaluation_datasets: no section 'vqa2' \(known: refer, vqa, elsewhere\)"):
        load_config(path, for_training=False, for_evaluation=True, evaluation_names=["vqa2"])


def test_eval_scores_every_question_and_resumes_after_a_kill(tmp_path, shapes_dir):
    from minigpt.runners.eval_recipe import evaluate

    config, path = eval_config(tmp_path, shapes_dir, shapes_sections(shapes_dir))
    results = evaluate(config, str(path))
    out = tmp_path / "eval"
    for name, total in (("refer", 12), ("vqa", 12)):
        scores = json.loads((out / name / "scores.json").read_text())
        predictions = json.loads((out / name / "predictions.json").read_text())
        assert scores == results[name] and scores["answered"] == total == len(predictions) and scores["skipped"] == 0
        metric = scores["metric"]
        assert scores["scores"][metric] == pytest.approx(sum(p["scores"][metric] for p in predictions) / total)
    refer = json.loads((out / "refer" / "predictions.json").read_text())
    assert refer[0]["reference"]["image_size"] == [64, 64] and len(refer[0]["reference"]["box"]) == 4

    # Killed after 5 answers, in the middle of writing the 6th: the rerun answers only the 7 missing.
    answers_file = out / "vqa" / "predictions-rank0.jsonl"
    lines = answers_file.read_text().splitlines()
    answers_file.write_text("\n".join(lines[:5]) + "\n" + lines[5][:20] + "\n")
    (out / "vqa" / "predictions.json").unlink()
    before = json.loads((out / "refer" / "predictions.json").read_text())
    evaluate(config, str(path))
    assert len(answers_file.read_text().splitlines()) == 5 + 1 + 7
    assert json.loads((out / "vqa" / "scores.json").read_text())["answered"] == 12
    assert [p["answer"] for p in json.loads((out / "vqa" / "predictions.json").read_text())] == \
           [json.loads(line)["answer"] for line in lines]  # the same answers as the uninterrupted run
    assert json.loads((out / "refer" / "predictions.json").read_text()) == before  # nothing asked again

    # Answers of another config are never mixed in.
    changed, _ = eval_config(tmp_path, shapes_dir, {"vqa": {**shapes_sections(shapes_dir)["vqa"], "max_new_tokens": 6}})
    with pytest.raises(ValueError, match="holds answers of another model or config; pass --overwrite"):
        evaluate(changed, str(path))
    evaluate(changed, str(path), overwrite=True)
    assert len(answers_file.read_text().splitlines()) == 12


def test_unreadable_images_are_skipped_and_counted_or_fatal_when_strict(tmp_path, shapes_dir):
    from minigpt.runners.eval_recipe import evaluate

    records = json.loads((shapes_dir / "test.json").read_text())[:6]
    (tmp_path / "images").mkdir()
    for record in records:
        Image.open(shapes_dir / "images" / record["image"]).save(tmp_path / "images" / record["image"])
    (tmp_path / "images" / records[2]["image"]).write_bytes(b"not a jpeg")
    (tmp_path / "test.json").write_text(json.dumps(records))
    section = {"builder": "sharegpt4v", "task": "vqa", "max_new_tokens": 2, "batch_size": 4,
               "build_info": {"ann_path": str(tmp_path / "test.json"), "image_path": str(tmp_path / "images")}}
    config, path = eval_config(tmp_path, shapes_dir, {"vqa": section})
    scores = evaluate(config, str(path))["vqa"]
    broken = [r["id"] for r in records if r["image"] == records[2]["image"]]  # test.json asks 2 questions per image
    assert (scores["answered"], scores["skipped"]) == (6 - len(broken), len(broken)) and len(broken) == 2
    skipped = [p for p in json.loads((tmp_path / "eval" / "vqa" / "predictions.json").read_text()) if "skipped" in p]
    assert [p["id"] for p in skipped] == broken and "unreadable image" in skipped[0]["skipped"]

    strict, _ = eval_config(tmp_path, shapes_dir, {"vqa": section}, strict=True, output_dir=str(tmp_path / "strict"))
    with pytest.raises(ValueError, match=rf"test.json: id '{records[2]['id']}': unreadable image .*{records[2]['image']}"):
        evaluate(strict, str(path))


@pytest.mark.slow
def test_two_ranks_give_the_answers_and_scores_of_one(tmp_path, shapes_dir):
    from minigpt.runners.eval_recipe import evaluate

    config, path = eval_config(tmp_path, shapes_dir, shapes_sections(shapes_dir, count=10), output_dir=str(tmp_path / "one"))
    evaluate(config, str(path))
    run_script([TORCHRUN, "--nproc-per-node", "2", "--master-port", free_port(), "eval.py", "--cfg-path", str(path),
                "--options", f"run.output_dir={tmp_path}/two"])
    for name in ("refer", "vqa"):
        one, two = (json.loads((tmp_path / run / name / "scores.json").read_text()) for run in ("one", "two"))
        assert (one["world_size"], two["world_size"]) == (1, 2)
        assert one["scores"] == two["scores"] and one["answered"] == two["answered"] == 10
        answers = [[(p["id"], p["answer"]) for p in json.loads((tmp_path / run / name / "predictions.json").read_text())]
                   for run in ("one", "two")]
        assert answers[0] == answers[1]
        assert len(list((tmp_path / "two" / name).glob("predictions-rank*.jsonl"))) == 2  # both ranks answered


def shipped_benchmark_config(shapes_dir, formats):
    """minigptv2_benchmark_evaluation.yaml with each section's paths pointing at a small file of its layout."""
    shipped = OmegaConf.load(REPO / "eval_configs/minigptv2_benchmark_evaluation.yaml")
    layout_of = {"refcoco": "refcoco", "refcoco+": "refcoco", "refcocog": "refcoco", "ok_vqa": "ok_vqa",
                 "coco_vqa": "ok_vqa", "gqa": "gqa", "coco_caption": "coco_caption", "vizwiz": "vizwiz", "vsr": "vsr",
                 "hateful_memes": "hateful_memes", "iconqa": "iconqa"}
    options = [f"model.{key}=null" for key in ("vit_weights", "ckpt", "llama_model")]
    options += [f"model.tokenizer={shapes_dir}/tokenizer", "model.llama_config.hidden_size=64"]
    for name, section in shipped.evaluation_datasets.items():
        paths = formats[layout_of[section.builder]]["build_info"]
        options += [f"evaluation_datasets.{name}.build_info.{key}={paths[key]}" for key in ("ann_path", "image_path")]
    return load_config(REPO / "eval_configs/minigptv2_benchmark_evaluation.yaml", options, for_training=False,
                       for_evaluation=True)


def test_the_shipped_benchmark_config_loads_once_its_paths_exist(shapes_dir, formats):
    """Every section of minigptv2_benchmark_evaluation.yaml is valid for its builder (only paths are missing)."""
    config = shipped_benchmark_config(shapes_dir, formats)
    metrics = {name: registry.get("builder", s.builder)(name, s).eval_metric() for name, s in config.evaluation_datasets.items()}
    assert metrics["refcoco_testA"] == "refer_accuracy" and metrics["okvqa"] == metrics["vqav2_val"] == "vqa_accuracy"
    assert metrics["gqa"] == "exact_match" and metrics["coco_caption_test"] == "caption"
    assert config.evaluation_datasets["refcocog_test"].split == "test"
    assert metrics["vizwiz"] == "vqa_accuracy" and metrics["vsr"] == metrics["hm"] == metrics["iconvqa"] == "exact_match"
    assert config.evaluation_datasets["iconvqa"].choice_scoring == "original"  # reproduces the published numbers


# The questions of MiniGPT-v2's eval scripts (eval_ref.py, vqa_datasets.py), in its prompt (prepare_texts).
ORIGINAL_QUESTIONS = {
    "refcoco": "[refer] give me the location of {}",
    "vqa": "[vqa] Based on the image, respond to this question with a short answer: {}",
    "vizwiz": "[vqa] The question is '{}' Based on the image, answer the question with a single word or phrase. and "
              "reply 'unanswerable' when the provided information is insufficient",
    "vsr": "[vqa] Based on the image, is this statement true or false? {}",
    "hateful_memes": "This is an image writting '{}'. Is this image hateful? Answer yes or no. Answer:",
}


def test_the_shipped_benchmark_config_asks_as_the_original_eval_scripts(shapes_dir, formats):
    config = shipped_benchmark_config(shapes_dir, formats)
    template = PromptTemplate.from_model_config(config.model)
    assert config.model.chat_prompt == "minigptv2"
    checked = set()
    for name, section in config.evaluation_datasets.items():
        if section.builder in ("coco_caption", "refcoco+", "refcocog"):
            continue  # no caption benchmark in the original's scripts; RefCOCO+/g are worded as RefCOCO
        if section.builder in ("iconqa", "refcoco"):
            section.split = "train"  # the small files' split
        builder = registry.get("builder", section.builder)(name, section)
        records = builder.records()
        items = builder.eval_items(records, section.instruction)
        if not items:  # the small files hold one split
            continue
        record = records[0]  # items keep the records' order
        key = section.builder
        question = ORIGINAL_QUESTIONS.get(key, ORIGINAL_QUESTIONS["vqa"])
        text = record["sentences"][0] if key == "refcoco" else record["question"]
        expected = f"<s>[INST] <Img><ImageHere></Img> {question.format(text)} [/INST]"
        assert template.chat_style.render(template.pairs(items[0]["turns"], True, items[0]["id"], items[0]["task"])) == expected
        checked.add(key)
    assert checked == {"refcoco", "ok_vqa", "coco_vqa", "gqa", "vizwiz", "iconqa", "vsr", "hateful_memes"}


def test_eval_answers_exactly_as_demo_does(tmp_path, shapes_dir):
    """With the same generation settings eval.py and demo.py give the same answers, so the learning tests'
    accuracies, scored by eval.py, are those of the demo."""
    from minigpt.runners.eval_recipe import evaluate

    sections = shapes_sections(shapes_dir, count=8)
    sections["vqa"].update(max_new_tokens=6, repetition_penalty=1.05, batch_size=8)
    config, path = eval_config(tmp_path, shapes_dir, {"vqa": sections["vqa"]})
    evaluate(config, str(path))
    evaluated = {p["id"]: p["answer"] for p in json.loads((tmp_path / "eval" / "vqa" / "predictions.json").read_text())}
    records = json.loads((shapes_dir / "test.json").read_text())
    questions = tmp_path / "questions.json"
    questions.write_text(json.dumps([r for r in records if r["id"] in evaluated]))
    demo = run_script(["demo.py", "--cfg-path", str(path), "--questions", str(questions), "--json", "--cpu", "--task", "vqa",
                       "--image-root", str(shapes_dir / "images"), "--batch-size", "8", "--max-new-tokens", "6",
                       "--save-dir", str(tmp_path / "demo")])
    answered = {a["id"]: a["answer"] for a in map(json.loads, demo.stdout.splitlines()) if a}
    assert answered == evaluated and len(answered) == 8
