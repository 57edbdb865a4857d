"""RefCOCO, RefCOCO+ and RefCOCOg: referring expressions with their object boxes (the REFER layout).

    <ann_path>/<dataset>/refs(<splitBy>).p   a list of refs {"ref_id", "ann_id", "image_id", "split",
                                             "sentences": [{"sent"}]}; refs(<splitBy>).json is read
                                             instead when present. The pickle is read as plain data only.
    <ann_path>/<dataset>/instances.json      COCO "images" {id, width, height, file_name} and
                                             "annotations" {id, bbox: [x, y, w, h]}

`task: refer` asks where an expression is and answers with the box as 0-100 tokens
`{<x1><y1><x2><y2>}`; `task: identify` gives the box and answers with the expression.

eval.py asks about every expression of a ref once (RefCOCO accuracy counts expressions): `refer` is
scored by the IoU of the answer's first box with the object's box, `identify` by caption metrics
against the ref's expressions.
"""
from __future__ import annotations

from dataclasses import dataclass

from minigpt.common.errors import InputError
from minigpt.common.paths import resolve_path
from minigpt.common.registry import register_builder
from minigpt.conversation.boxes import xywh_box_tokens
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.datasets.annotations import AnnotationError, load_json, load_plain_pickle, load_records, require
from minigpt.datasets.builders.base import AnnotationBuilder, AnnotationConfig, eval_item, fixed_question
from minigpt.datasets.instructions import IDENTIFY, REFER, phrase

DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocop": "unc", "refcocog": "umd"}
FOLDER = {"refcocop": "refcoco+"}


@dataclass
class ReferConfig(AnnotationConfig):
    split: str = "train"
    task: str = "refer"  # refer: expression -> box; identify: box -> expression


@register_builder("refcoco", "refcoco+", "refcocop", "refcocog")
class ReferCOCOBuilder(AnnotationBuilder):
    config_class = ReferConfig

    def parse(self, ann_path):
        if self.cfg.task not in ("refer", "identify"):
            raise InputError(f"datasets.{self.name}.task: '{self.cfg.task}' is not refer or identify")
        info = self.cfg.build_info
        builder_name = self.cfg.builder or self.name  # invrefcoco+ (builder: refcoco+) reads refcoco+
        dataset = info.dataset or FOLDER.get(builder_name, builder_name)
        split_by = info.splitBy or DEFAULT_SPLIT_BY.get(dataset, "unc")
        folder = resolve_path(ann_path) / dataset
        refs_json = folder / f"refs({split_by}).json"
        refs_path = refs_json if refs_json.exists() else folder / f"refs({split_by}).p"
        refs = load_records(refs_path) if refs_path.suffix == ".json" else load_plain_pickle(refs_path)
        if not isinstance(refs, list):
            raise AnnotationError(refs_path, None, f"expected a list of refs, got {type(refs).__name__}")
        instances_path = folder / "instances.json"
        instances = load_json(instances_path)
        if not isinstance(instances, dict) or not {"images", "annotations"} <= instances.keys():
            raise AnnotationError(instances_path, None, "expected COCO instances with 'images' and 'annotations'")
        images = {image["id"]: image for image in instances["images"]}
        boxes = {annotation["id"]: annotation["bbox"] for annotation in instances["annotations"]}

        records = []
        for index, ref in enumerate(refs):
            if require(ref, "split", refs_path, index) != self.cfg.split:
                continue
            ref_id = require(ref, "ref_id", refs_path, index)
            image_id, ann_id = require(ref, "image_id", refs_path, index), require(ref, "ann_id", refs_path, index)
            if image_id not in images or ann_id not in boxes:
                raise AnnotationError(refs_path, index, f"image {image_id} or annotation {ann_id} is not in {instances_path}", ref_id)
            image = images[image_id]
            sentences = [require(s, "sent", refs_path, index) for s in require(ref, "sentences", refs_path, index)]
            if not sentences:
                raise AnnotationError(refs_path, index, "field 'sentences' is empty", ref_id)
            x, y, w, h = boxes[ann_id]
            records.append({
                "id": str(ref_id),
                "image": image.get("file_name", f"COCO_train2014_{image_id:012d}.jpg"),
                "sentences": sentences,
                "box": xywh_box_tokens(boxes[ann_id], image["width"], image["height"]),
                "pixel_box": [x, y, x + w, y + h],
            })
        return records

    def eval_metric(self):
        return "refer_accuracy" if self.cfg.task == "refer" else "caption"

    def eval_items(self, records, instruction=None):
        if self.cfg.task == "identify":  # one question per object, any of its expressions is a reference
            return [eval_item(record["id"], record, "identify",
                              [(USER, fixed_question(instruction, IDENTIFY[1], record["box"]))],
                              {"captions": record["sentences"]}) for record in records]
        return [eval_item(f"{record['id']}-{number}", record, "refer",
                          [(USER, fixed_question(instruction, REFER[2], sentence))], {"box": record["pixel_box"]})
                for record in records for number, sentence in enumerate(record["sentences"])]

    def make_sample(self, record, rng):
        sentence = rng.choice(record["sentences"])
        if self.cfg.task == "refer":
            return {"turns": [(USER, phrase(REFER, rng, sentence)), (ASSISTANT, record["box"])], "task": "refer"}
        return {"turns": [(USER, phrase(IDENTIFY, rng, record["box"])), (ASSISTANT, sentence)], "task": "identify"}
