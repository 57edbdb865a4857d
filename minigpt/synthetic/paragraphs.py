"""Synthetic scenes for image-to-paragraph: one-line captions, grounded descriptions, region crops, and a
held-out gallery in which one-line captions cannot tell scenes apart.

    python dataset/synthetic_paragraphs.py --out data/paragraphs --seed 0

Writes, deterministically from the seed:
    DIR/paragraph_train.json   MiniGPT-v2 records (ShareGPT4V layout with a "task") per training image:
                               [caption] "Briefly describe this image." -> "a red circle and a blue square."
                                 (colours and shapes only: no size, no position, as a one-line caption is)
                               [grounding] "describe this image in detail" -> "<p>a large red circle</p>
                                 {<x1><y1><x2><y2>} and ...", objects in reading order
                               [caption] of one object's crop -> "a red circle."
    DIR/gallery.json           held out: groups of GROUP_SIZE scenes with the same coloured shapes (so the
                               same one-line caption) at other places and sizes. A record is {"id",
                               "image", "group", "objects": [{"name", "color", "size", "position", "box"}]}
    DIR/images/*.png           the images of both (crops included)
    DIR/tokenizer/             a sentencepiece tokenizer trained on all of the text above

The instructions are the ones the agent's model tools ask (minigpt/agents/model_tools.py), so the
image-to-paragraph pipeline asks a model trained here exactly what it was trained on.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from minigpt.agents.model_tools import CAPTION_QUESTION, GROUNDING_QUESTION
from minigpt.conversation.boxes import box_tokens
from minigpt.models.tokenizer import train_tokenizer
from minigpt.paragraph.pipeline import padded_box
from minigpt.synthetic.shapes import (COLORS, POSITIONS, SHAPES, SIZES, draw, join_words, make_scene, place,
                                      position_of)

GROUP_SIZE = 3  # gallery scenes per one-line caption


def short_caption(shapes: list[dict]) -> str:
    """The one-line caption: colours and shapes in a fixed order, e.g. "a red circle and a blue square." """
    ordered = sorted(shapes, key=lambda s: SHAPES.index(s["shape"]))
    return join_words([f"a {s['color']} {s['shape']}" for s in ordered]) + "."


def reading_order(shapes: list[dict]) -> list[dict]:
    return sorted(shapes, key=lambda s: ((s["bbox"][1] + s["bbox"][3]) // 2, (s["bbox"][0] + s["bbox"][2]) // 2))


def grounded_description(shapes: list[dict], image_size: int) -> str:
    return join_words([f"<p>a {s['size']} {s['color']} {s['shape']}</p>"
                       f" {box_tokens(*s['bbox'], image_size, image_size)}"
                       for s in reading_order(shapes)])


def record(record_id: str, image: str, task: str, question: str, answer: str) -> dict:
    return {"id": record_id, "image": image, "task": task,
            "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]}


def training_records(out: Path, rng: random.Random, count: int, image_size: int) -> list[dict]:
    records = []
    for index in range(count):
        shapes = make_scene(rng, image_size)
        image = draw(shapes, image_size)
        name = f"train_{index:06d}.png"
        image.save(out / "images" / name)
        records.append(record(f"caption_{index:06d}", name, "caption", CAPTION_QUESTION, short_caption(shapes)))
        records.append(record(f"grounding_{index:06d}", name, "grounding", GROUNDING_QUESTION,
                              grounded_description(shapes, image_size)))
        target = rng.choice(shapes)
        crop = f"train_{index:06d}_crop.png"
        image.crop(tuple(padded_box(target["bbox"], image_size, image_size))).save(out / "images" / crop)
        records.append(record(f"crop_{index:06d}", crop, "caption", CAPTION_QUESTION, short_caption([target])))
    return records


def gallery_scene(rng: random.Random, kinds: list[tuple[str, str]], image_size: int) -> list[dict]:
    """The given (shape, colour) pairs at new places and sizes."""
    while True:
        shapes = []
        for shape, color in kinds:
            size = rng.choice(list(SIZES))
            box = place(rng, round(SIZES[size] * image_size), image_size, [s["bbox"] for s in shapes])
            if box is None:
                break
            shapes.append({"shape": shape, "color": color, "size": size, "position": position_of(box, image_size),
                           "bbox": box})
        else:
            return shapes


def gallery_records(out: Path, rng: random.Random, groups: int, image_size: int) -> list[dict]:
    """Groups of GROUP_SIZE scenes sharing their coloured shapes; within a group no two scenes have the
    same layout (every object's position and size)."""
    records = []
    for group in range(groups):
        kinds = [(shape, rng.choice(list(COLORS))) for shape in rng.sample(SHAPES, rng.randint(2, 3))]
        layouts: set[tuple] = set()
        while len(layouts) < GROUP_SIZE:
            shapes = gallery_scene(rng, kinds, image_size)
            layout = tuple((s["position"], s["size"]) for s in shapes)
            if layout in layouts:
                continue
            layouts.add(layout)
            index = len(records)
            name = f"gallery_{index:06d}.png"
            draw(shapes, image_size).save(out / "images" / name)
            objects = [{"name": s["shape"], "color": s["color"], "size": s["size"], "position": s["position"],
                        "box": s["bbox"]} for s in reading_order(shapes)]
            records.append({"id": f"gallery_{index:06d}", "image": name, "group": group, "objects": objects})
    return records


def generate(out: str | Path, seed: int = 0, train_images: int = 3000, gallery_groups: int = 20,
             image_size: int = 64) -> dict:
    """Write the training records, the gallery and the tokenizer under `out`; returns paths and counts."""
    start = time.perf_counter()
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    root = random.Random(seed)
    train_rng, gallery_rng = random.Random(root.getrandbits(64)), random.Random(root.getrandbits(64))
    train = training_records(out, train_rng, train_images, image_size)
    gallery = gallery_records(out, gallery_rng, gallery_groups, image_size)
    (out / "paragraph_train.json").write_text(json.dumps(train, indent=1) + "\n")
    (out / "gallery.json").write_text(json.dumps(gallery, indent=1) + "\n")
    texts = [turn["value"].removeprefix("<image>\n") for r in train for turn in r["conversations"]]
    words = [*COLORS, *SHAPES, *SIZES, *(p for row in POSITIONS for p in row)]
    texts += [f"<{value}>" for value in range(101)] * 20 + words * 50
    texts += ["[INST] ", " [/INST] ", "<Img><ImageHere></Img> "] * 200
    tokenizer = train_tokenizer(texts, out / "tokenizer")
    return {"train": str(out / "paragraph_train.json"), "gallery": str(out / "gallery.json"),
            "images": str(out / "images"), "tokenizer": str(tokenizer), "train_records": len(train),
            "gallery_scenes": len(gallery), "seconds": round(time.perf_counter() - start, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-images", type=int, default=3000)
    parser.add_argument("--gallery-groups", type=int, default=20, help=f"groups of {GROUP_SIZE} gallery scenes")
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    summary = generate(args.out, args.seed, args.train_images, args.gallery_groups, args.image_size)
    print(f"train:   {summary['train_records']} records in {summary['train']}")
    print(f"gallery: {summary['gallery_scenes']} scenes in {summary['gallery']}")
    print(f"tokenizer: {summary['tokenizer']}")
    print(f"done in {summary['seconds']:.1f} s")


if __name__ == "__main__":
    main()
