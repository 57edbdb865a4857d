"""lmms-eval runs our model natively (`--model minigpt`, minigpt/plugins/lmms_eval_model.py) and answers as
`minigpt eval` does: the same generated answers, and the same multiple-choice picks, on the same questions.

The questions are the synthetic shapes' held-out colour questions, written twice: as lmms-eval task YAMLs
over a local JSON file (a generation task and a multiple-choice one), and as an eval config's sections
(sharegpt4v asked as "[vqa]", and iconqa's converted choice format). The model is the tiny MiniGPT-v2 with
random weights, seeded from run.seed, so both processes hold the same model; its answers are arbitrary,
which makes agreement telling (a missing "[vqa]" or a different option loss changes them).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import free_port
from minigpt.synthetic.shapes import generate

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = 10
ICONQA_WORDING = "Based on the image, answer this question with a short answer: "

lmms_eval = pytest.importorskip("lmms_eval", reason="lmms-eval is not installed (pip install -e '.[lmms-eval]')")
from minigpt.plugins.lmms_eval_model import generation_options, task_identifier_for  # noqa: E402

UTILS = '''from PIL import Image


def doc_to_visual(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def process_results(doc, results):
    return {"match": float(results[0].strip() == doc["answer"])}
'''

GENERATION_TASK = {
    "task": "shapes_colours", "dataset_path": "json", "test_split": "test", "output_type": "generate_until",
    "doc_to_visual": "!function utils.doc_to_visual", "doc_to_text": "question", "doc_to_target": "answer",
    "generation_kwargs": {"max_new_tokens": 12, "temperature": 0, "do_sample": False, "num_beams": 1},
    "process_results": "!function utils.process_results",
    "metric_list": [{"metric": "match", "aggregation": "mean", "higher_is_better": True}],
}
CHOICE_TASK = {
    "task": "shapes_colour_choice", "dataset_path": "json", "test_split": "test", "output_type": "multiple_choice",
    "doc_to_visual": "!function utils.doc_to_visual", "doc_to_text": ICONQA_WORDING + "{{question}}",
    "doc_to_choice": "choices", "doc_to_target": "answer", "metric_list": [{"metric": "acc"}],
}


def task_yaml(task: dict, data_file: Path) -> str:
    """A task YAML in lmms-eval's format; `!function` tags are written bare, as lmms-eval's loader reads them."""
    text = yaml.safe_dump({**task, "dataset_kwargs": {"data_files": {"test": str(data_file)}}}, sort_keys=False)
    return text.replace("'!function utils.doc_to_visual'", "!function utils.doc_to_visual").replace(
        "'!function utils.process_results'", "!function utils.process_results")


@pytest.fixture(scope="module")
def questions(tmp_path_factory) -> Path:
    """The same questions as lmms-eval tasks (tasks/) and as eval sections (test.json, iconqa.json)."""
    root = tmp_path_factory.mktemp("lmms")
    generate(root / "shapes", seed=0, stage1_images=0, train_images=4, test_images=QUESTIONS, shard_size=10,
             grounding_images=0, grounding_test_images=0)
    records = [r for r in json.loads((root / "shapes/test.json").read_text())
               if r["question_type"] == "colors"][:QUESTIONS]
    (root / "test.json").write_text(json.dumps(records))
    answers = sorted({r["conversations"][1]["value"] for r in records})
    rng, docs, iconqa = random.Random(0), [], []
    for r in records:
        image, question, answer = r["image"], r["conversations"][0]["value"], r["conversations"][1]["value"]
        choices = sorted({answer, *rng.sample([a for a in answers if a != answer], 3)})
        docs.append({"id": r["id"], "image": str(root / "shapes/images" / image), "question": question,
                     "answer": answer, "choices": choices})
        (root / "iconqa" / r["id"]).mkdir(parents=True)
        shutil.copy(root / "shapes/images" / image, root / "iconqa" / r["id"] / "image.png")
        iconqa.append({"image_id": r["id"], "question": question.replace("<image>\n", ""), "choices": choices,
                       "answer": answer})
    (root / "docs.json").write_text(json.dumps(docs))
    (root / "iconqa.json").write_text(json.dumps(iconqa))
    (root / "tasks").mkdir()
    (root / "tasks/utils.py").write_text(UTILS)
    for task in (GENERATION_TASK, CHOICE_TASK):
        (root / "tasks" / f"{task['task']}.yaml").write_text(task_yaml(task, root / "docs.json"))
    return root


def eval_config(root: Path) -> Path:
    """tiny_v2_eval.yaml with random weights, asking the same questions in two sections."""
    config = yaml.safe_load((REPO / "eval_configs/tiny_v2_eval.yaml").read_text())
    config["model"].update(tokenizer=str(root / "shapes/tokenizer"), ckpt=None)
    processor = config["evaluation_datasets"]["shapes_vqa"]["vis_processor"]
    config["evaluation_datasets"] = {
        "colours": {"builder": "sharegpt4v", "task": "vqa", "metric": "exact_match", "max_new_tokens": 12,
                    "batch_size": 4, "vis_processor": processor,
                    "build_info": {"ann_path": str(root / "test.json"), "image_path": str(root / "shapes/images")}},
        "colour_choice": {"builder": "iconqa", "batch_size": 4, "vis_processor": processor,
                          "build_info": {"ann_path": str(root / "iconqa.json"), "image_path": str(root / "iconqa")}},
    }
    config["run"] = {"device": "cpu", "output_dir": str(root / "minigpt_eval")}
    path = root / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_lmms_eval(root: Path, cfg_path: Path, model_args: str = "", processes: int = 1,
                  limit: int | None = None) -> dict[str, dict[str, dict]]:
    """lmms-eval's logged samples per task, {task: {question id: sample}}; a sample's "filtered_resps"
    hold the model's answer, or each choice's (loss, greedy) as strings."""
    out = root / f"lmms_out{len(model_args)}_{processes}"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", str(processes),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", free_port()] if processes > 1 else [
                sys.executable]
    subprocess.run([*launcher, "-m", "lmms_eval", "--model", "minigpt", *(["--limit", str(limit)] if limit else []),
                    "--model_args", f"cfg_path={cfg_path}{model_args}", "--tasks", "shapes_colours,shapes_colour_choice",
                    "--include_path", str(root / "tasks"), "--batch_size", "4", "--log_samples",
                    "--output_path", str(out)], check=True, env=env, cwd=root, timeout=600)
    docs = json.loads((root / "docs.json").read_text())
    samples = {}
    for path in out.rglob("*_samples_*.jsonl"):
        task = "shapes_colour_choice" if "choice" in path.name else "shapes_colours"
        samples[task] = {docs[s["doc_id"]]["id"]: {**s, "doc": docs[s["doc_id"]]}
                         for s in map(json.loads, path.read_text().splitlines())}
    return samples


@pytest.mark.slow
def test_lmms_eval_answers_as_minigpt_eval(questions):
    cfg_path = eval_config(questions)
    subprocess.run([sys.executable, "-m", "minigpt", "eval", "--cfg-path", str(cfg_path)], check=True, cwd=questions,
                   timeout=600)
    ours = {name: {p["id"]: p for p in json.loads((questions / "minigpt_eval" / name / "predictions.json").read_text())}
            for name in ("colours", "colour_choice")}
    samples = run_lmms_eval(questions, cfg_path)

    generated = {doc_id: s["filtered_resps"][0] for doc_id, s in samples["shapes_colours"].items()}
    assert len(generated) == QUESTIONS
    assert generated == {doc_id: p["answer"] for doc_id, p in ours["colours"].items()}

    picked = {doc_id: s["doc"]["choices"][min(range(len(s["filtered_resps"])), key=lambda k: float(s["filtered_resps"][k][0]))]
              for doc_id, s in samples["shapes_colour_choice"].items()}
    assert len(picked) == QUESTIONS
    assert picked == {doc_id: p["answer"] for doc_id, p in ours["colour_choice"].items()}
    assert len(set(picked.values())) > 1  # the picks depend on the question, not one option always

    # Two processes, as `accelerate launch` runs one per GPU: each answers its share, and the answers are the same.
    shared = run_lmms_eval(questions, cfg_path, processes=2)
    assert {doc_id: s["filtered_resps"][0] for doc_id, s in shared["shapes_colours"].items()} == generated

    # Without MiniGPT-v2's "[vqa]" the same model answers otherwise: the identifier is what makes them agree.
    bare = run_lmms_eval(questions, cfg_path, ",task_identifier=none", limit=4)
    assert {d: s["filtered_resps"][0] for d, s in bare["shapes_colours"].items()} != {
        d: generated[d] for d in bare["shapes_colours"]}


def test_task_identifiers_follow_minigptv2s_eval_scripts():
    assert task_identifier_for("refcoco_bbox_rec_val", "auto") == "refer"
    assert task_identifier_for("refcocog_bbox_rec_test", "auto") == "refer"
    assert [task_identifier_for(task, "auto") for task in ("mme", "gqa", "vizwiz_vqa_val")] == ["vqa"] * 3
    assert task_identifier_for("mme", "none") is None and task_identifier_for("mme", "grounding") == "grounding"


def test_generation_kwargs_become_the_chat_engines_options():
    greedy = generation_options({"until": "\n\n", "max_new_tokens": 16, "temperature": 0, "do_sample": False}, 256)
    assert (greedy.do_sample, greedy.max_new_tokens, greedy.stop, greedy.num_beams) == (False, 16, ("\n\n",), 1)
    assert greedy.repetition_penalty == 1.0  # as minigpt eval's sections
    sampled = generation_options({"temperature": 0.7, "do_sample": True, "top_p": 0.5}, 256)
    assert (sampled.do_sample, sampled.temperature, sampled.top_p, sampled.max_new_tokens) == (True, 0.7, 0.5, 256)
    assert not generation_options({"temperature": 0, "do_sample": True}, 8).do_sample  # temperature 0: greedy
