"""The evaluation recipe: answer every question of each `evaluation_datasets` section, then score them.

For each data set, every rank answers its share (every world_size-th) of the questions not answered
yet, in left-padded batches through the chat engine (a multiple-choice question is answered with the
choice the model finds most likely instead), and appends the answers to
`<out>/<name>/predictions-rank<r>.jsonl` after each batch. An interrupted evaluation started again with
the same config therefore continues where it stopped, with any number of ranks. Rank 0 then reads
every rank's file, scores the answers (evaluation/metrics.py) and writes `predictions.json` (question,
answer, reference and score of each) and `scores.json` (the scores, with the config and checkpoint that
produced them). `<out>` is run.save_path, else run.output_dir; every rank must see it, as for checkpoints.

A section whose builder's metric names a registered evaluation task ("eval_task", such as the paragraph
gallery's "paragraph") is scored by that task as a whole instead, on rank 0, into the same two files.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from minigpt.common import registry
from minigpt.common.checkpoint import save_config
from minigpt.common.dist import DistInfo, barrier, setup_distributed
from minigpt.common.errors import InputError
from minigpt.common.logger import JsonlLogger, MultiLogger, WandbLogger
from minigpt.common.paths import resolve_path
from minigpt.inference.chat import GenerationOptions, choose_answers, generate_answers
from minigpt.conversation.collator import collator_for
from minigpt.datasets.builders.base import build_processor
from minigpt.datasets.image_records import read_image
from minigpt.evaluation.metrics import METRICS
from minigpt.models.image_tokens import input_image_size
from minigpt.models.vision_towers import tower_shape
from minigpt.inference.loading import Placement, load_model
from minigpt.processors.image import Blip2ImageProcessor


class QuestionImages(Dataset):
    """Evaluation items with their images read and processed (in DataLoader workers). An unreadable
    image gives {"id", "skipped": reason}, counted in scores.json, unless `strict`."""

    def __init__(self, items: list[dict], image_root: str, processor, strict: bool, source: str):
        self.items, self.image_root, self.processor = items, resolve_path(image_root), processor
        self.strict, self.source = strict, source

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        if item["image"] is None:
            return {**item, "image": None, "image_size": None}
        path = self.image_root / item["image"]
        try:
            image = read_image(path)
        except Exception as error:
            message = f"{self.source}: id {item['id']!r}: unreadable image {path}: {error}"
            if self.strict:
                raise InputError(message) from error
            return {"id": item["id"], "skipped": message}
        return {**item, "image": self.processor(image), "image_size": list(image.size)}


def read_predictions(folder: Path) -> dict[str, dict]:
    """Every rank's answers so far, by id. A line cut short by a killed run is ignored (asked again)."""
    predictions = {}
    for path in sorted(folder.glob("predictions-rank*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                prediction = json.loads(line)
            except json.JSONDecodeError:
                continue
            predictions.setdefault(prediction["id"], prediction)
    return predictions


def write_json(path: Path, value) -> None:
    """Atomically: a reader never sees half a file."""
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(value, indent=1) + "\n")
    os.replace(partial, path)


def fingerprint(config: DictConfig, section: DictConfig) -> str:
    """What the answers depend on: the model section, the checkpoint file's time, the data set section
    (less its batch size, so a rerun may change it)."""
    ckpt = config.model.ckpt
    ckpt_time = resolve_path(ckpt).stat().st_mtime if ckpt and resolve_path(ckpt).exists() else None
    questions = {key: value for key, value in OmegaConf.to_container(section).items() if key != "batch_size"}
    text = json.dumps([OmegaConf.to_container(config.model), ckpt_time, questions], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare_folder(folder: Path, stamp: str, overwrite: bool, name: str) -> None:
    """Start or continue `folder`; refuse to mix answers of another model or config into it."""
    if overwrite and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp_file = folder / "fingerprint.txt"
    if stamp_file.exists() and stamp_file.read_text().strip() != stamp:
        raise InputError(f"evaluation_datasets.{name}: {folder} holds answers of another model or config; "
                         "pass --overwrite to start again, or set run.output_dir to a new folder")
    stamp_file.write_text(stamp + "\n")


def answer_questions(items: list[dict], section: DictConfig, model, collator, dist: DistInfo, folder: Path,
                     processor, num_workers: int, strict: bool, batch_size: int) -> None:
    """This rank's share of the unanswered items, appended to its predictions file batch by batch."""
    answered = read_predictions(folder)
    todo = [item for item in items if item["id"] not in answered][dist.rank::dist.world_size]
    barrier()  # every rank splits the same unanswered items: none writes before all have read
    images = QuestionImages(todo, section.build_info.image_path, processor, strict, section.build_info.ann_path)
    loader = DataLoader(images, batch_size=batch_size, num_workers=num_workers, collate_fn=list)
    options = GenerationOptions(max_new_tokens=section.max_new_tokens, num_beams=section.num_beams,
                                repetition_penalty=section.repetition_penalty, do_sample=False)
    with open(folder / f"predictions-rank{dist.rank}.jsonl", "a") as file, torch.no_grad():
        for batch in tqdm(loader, desc=folder.name, disable=not dist.is_main, file=sys.stderr):
            ready = [sample for sample in batch if "skipped" not in sample]
            if ready and "choices" in ready[0]:  # multiple choice: the most likely choice, nothing generated
                answers = choose_answers(model, collator, ready, section.choice_scoring)
            else:
                answers = generate_answers(model, collator, ready, options) if ready else []
            for sample, answer in zip(ready, answers):
                reference = dict(sample["reference"])
                if "box" in reference:
                    reference["image_size"] = sample["image_size"]
                choices = {"choices": sample["choices"]} if "choices" in sample else {}
                file.write(json.dumps({"id": sample["id"], "question": sample["turns"][-1][1], **choices,
                                       "answer": answer, "reference": reference}) + "\n")
            for sample in batch:
                if "skipped" in sample:
                    file.write(json.dumps(sample) + "\n")
            file.flush()


def score(items: list[dict], folder: Path, metric: str, name: str) -> tuple[dict, list[dict], int]:
    """-> (scores, predictions in item order with their scores, skipped count), from every rank's file."""
    predictions = read_predictions(folder)
    missing = [item["id"] for item in items if item["id"] not in predictions]
    if missing:
        raise RuntimeError(f"evaluation_datasets.{name}: {len(missing)} questions have no answer (first: "
                           f"{missing[0]}); a rank failed; run again to answer them")
    ordered = [predictions[item["id"]] for item in items]
    answered = [p for p in ordered if "skipped" not in p]
    try:
        scores, per_item = METRICS[metric]([p["answer"] for p in answered], [p["reference"] for p in answered])
    except (KeyError, ValueError) as error:
        raise InputError(f"evaluation_datasets.{name}: metric {metric}: {error}") from None
    for prediction, item_scores in zip(answered, per_item):
        prediction["scores"] = item_scores
    return scores, ordered, len(ordered) - len(answered)


def section_processor(section: DictConfig, config: DictConfig):
    """The section's eval transform, else a resize to the model's input size with its tower's normalisation."""
    tower = tower_shape(config.model)
    return (build_processor(section.vis_processor, "eval") if "eval" in section.vis_processor
            else Blip2ImageProcessor(image_size=input_image_size(config.model), mean=tower.mean, std=tower.std))


def record_scores(name: str, metric: str, scores: dict, predictions: list[dict], skipped: int, folder: Path,
                  config: DictConfig, cfg_path: str, world_size: int, logger) -> dict:
    """predictions.json and scores.json of one section, its scores logged and printed -> scores.json's contents."""
    write_json(folder / "predictions.json", predictions)
    result = {"dataset": name, "metric": metric, "scores": scores, "answered": len(predictions) - skipped,
              "skipped": skipped, "config": str(cfg_path), "checkpoint": config.model.ckpt,
              "world_size": world_size, "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_json(folder / "scores.json", result)
    logger.log({f"{name}/{key}": value for key, value in scores.items()}, step=0)
    print(f"{name}: " + ", ".join(f"{key} {value:.4f}" for key, value in scores.items())
          + f" ({len(predictions) - skipped} answered, {skipped} skipped) -> {folder}", file=sys.stderr)
    return result


def section_task(builder) -> type | None:
    """The evaluation task that scores the builder's section as a whole (an "eval_task" in the registry,
    named by the builder's metric, e.g. paragraph_gallery's "paragraph": paragraph/evaluation.py), or None
    when its questions are answered one by one."""
    metric = builder.eval_metric()
    return registry.get("eval_task", metric) if metric in registry.names("eval_task") else None


def run_section_task(task: type, config: DictConfig, cfg_path: str, section: DictConfig, builder, model,
                     folder: Path, overwrite: bool, logger) -> dict:
    """A whole-section task, on rank 0 alone: task(name, section).evaluate(model, image processor,
    records) -> (scores, predictions)."""
    prepare_folder(folder, fingerprint(config, section), overwrite, builder.name)
    scores, predictions = task(builder.name, section).evaluate(model, section_processor(section, config),
                                                               builder.records())
    return record_scores(builder.name, builder.eval_metric(), scores, predictions, 0, folder, config, cfg_path, 1,
                         logger)


def evaluate(config: DictConfig, cfg_path: str, names: list[str] | None = None, overwrite: bool = False) -> dict:
    """Evaluate the config's model on each named `evaluation_datasets` section (all by default);
    -> {name: scores.json contents} on rank 0, {} on the others."""
    run = config.run
    names = names or list(config.evaluation_datasets)
    unknown = [n for n in names if n not in config.evaluation_datasets]
    if unknown:
        raise InputError(f"{cfg_path}: no evaluation_datasets.{unknown[0]} (known: {', '.join(config.evaluation_datasets)})")
    dist = setup_distributed(run.device)
    out = resolve_path(run.save_path or run.output_dir)
    model = load_model(config, Placement(dist.device)).model  # random parts: the same on every rank and run
    collator = collator_for(model, config.model.max_txt_len)
    logger = None
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "eval_config.yaml")
        loggers = [JsonlLogger(out / "eval_log.jsonl")]
        if run.wandb_log:
            loggers.append(WandbLogger(run.wandb_project, run.job_name, OmegaConf.to_container(config), out))
        logger = MultiLogger(loggers)
    results = {}
    for name in names:
        section = config.evaluation_datasets[name]
        builder = registry.get("builder", section.builder)(name, section)
        task = section_task(builder)
        if task is not None:
            if dist.is_main:
                results[name] = run_section_task(task, config, cfg_path, section, builder, model, out / name,
                                                 overwrite, logger)
            barrier()
            continue
        items = builder.eval_items(builder.records(), section.instruction)
        if not items:
            raise InputError(f"evaluation_datasets.{name}: {section.build_info.ann_path} has no question to evaluate")
        metric = section.metric or builder.eval_metric()
        folder = out / name
        if dist.is_main:
            prepare_folder(folder, fingerprint(config, section), overwrite, name)
        barrier()
        processor = section_processor(section, config)
        answer_questions(items, section, model, collator, dist, folder, processor, run.num_workers, run.strict,
                         section.batch_size or run.batch_size_eval or 8)
        barrier()
        if not dist.is_main:
            continue
        scores, predictions, skipped = score(items, folder, metric, name)
        results[name] = record_scores(name, metric, scores, predictions, skipped, folder, config, cfg_path,
                                      dist.world_size, logger)
    if logger is not None:
        logger.close()
    return results
