"""Synthetic faces: drawn faces with known attributes, annotated by section as a face-description data set is.

    python dataset/synthetic_faces.py --out data/faces --seed 0

Writes, deterministically from the seed:
    DIR/shards/...             stage-1 captions of shapes images (shapes.py), so a tiny
                               model can be pretrained with this folder's tokenizer
    DIR/face_train.json        section-grouped annotations in the `face_annotations` layout: {"id", "image",
                               "section", "question"?, "answer"}, answers written as an annotator would,
                               several phrasings per fact; some records leave the question to the section's
                               instructions
    DIR/face_detailed.json     ShareGPT4V-layout detailed descriptions of the same images
    DIR/face_test.json         held out: one record per section and image, with the short reference answer
                               and "attributes" {name: value} that the per-section scores check
    DIR/images/*.png           the images
    DIR/tokenizer/             a tokenizer trained on the captions and every face text

An image shows one to three faces. A human face has an expression (happy, sad, surprised, angry or
neutral) and its intensity, a head tilt, a skin tone from six Fitzpatrick swatches, hair and eye colours
and maybe glasses; an animal face is a cat's. Gender and ethnicity are never drawn: a generator that drew
them could only teach stereotypes.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from PIL import Image, ImageDraw

from minigpt.models.tokenizer import train_tokenizer
from minigpt.synthetic.face_sections import SECTIONS, annotate, describe
from minigpt.synthetic.shapes import TEMPLATE_TEXTS, write_shards

EXPRESSIONS = ("happy", "sad", "surprised", "angry", "neutral")
INTENSITIES = {"slight": (0.24, 0.1), "moderate": (0.29, 0.13), "strong": (0.34, 0.16)}  # mouth half-width, depth
FITZPATRICK = {"I": (245, 222, 200), "II": (232, 196, 160), "III": (208, 160, 120), "IV": (170, 120, 80),
               "V": (120, 80, 50), "VI": (70, 45, 30)}
HAIR = {"black": (30, 25, 20), "brown": (110, 70, 35), "blond": (235, 200, 110), "red": (190, 70, 30),
        "gray": (165, 165, 165)}
EYES = {"blue": (40, 90, 220), "green": (40, 150, 60), "hazel": (150, 110, 40)}
FUR = {"gray": (140, 140, 140), "orange": (235, 140, 40)}
TILTS = {"upright": 0, "left": 18, "right": -18}  # degrees, counter-clockwise: "left" leans the top left
COUNT_WEIGHTS = {1: 0.55, 2: 0.25, 3: 0.2}
ANIMAL_SHARE = 0.25  # of single faces


def random_face(rng: random.Random, human: bool) -> dict:
    tilt = rng.choice(list(TILTS))
    if not human:
        return {"human": False, "fur": rng.choice(list(FUR)), "tilt": tilt}
    expression = rng.choice(EXPRESSIONS)
    return {"human": True, "expression": expression, "tilt": tilt, "skin": rng.choice(list(FITZPATRICK)),
            "intensity": None if expression == "neutral" else rng.choice(list(INTENSITIES)),
            "hair": rng.choice(list(HAIR)), "eyes": rng.choice(list(EYES)), "glasses": rng.random() < 0.4}


def make_faces(rng: random.Random) -> list[dict]:
    count = rng.choices(list(COUNT_WEIGHTS), weights=list(COUNT_WEIGHTS.values()))[0]
    if count == 1:
        return [random_face(rng, human=rng.random() >= ANIMAL_SHARE)]
    return [random_face(rng, human=True) for _ in range(count)]


# eyebrow heights (inner end, outer end) as fractions of the face's side: the brows carry the expression
# as much as the mouth does, over a larger part of the face
BROWS = {"happy": (0.31, 0.30), "sad": (0.29, 0.36), "surprised": (0.27, 0.27), "angry": (0.37, 0.28),
         "neutral": (0.33, 0.33)}
CHEEKS = {"happy": (250, 150, 180), "angry": (200, 30, 30)}


def draw_mouth(pen: ImageDraw.ImageDraw, face: dict, side: int) -> None:
    cx, cy = side * 0.5, side * 0.72
    half, depth = [v * side for v in INTENSITIES[face["intensity"] or "moderate"]]
    dark = (110, 20, 30)
    line = max(1, side // 24)
    if face["expression"] == "happy":  # the lower half of an ellipse, filled: a U
        pen.chord([cx - half, cy - depth, cx + half, cy + depth], 0, 180, fill=dark)
    elif face["expression"] == "sad":  # the upper half, lower down: an arch
        pen.chord([cx - half, cy, cx + half, cy + 2 * depth], 180, 360, fill=dark)
    elif face["expression"] == "surprised":
        pen.ellipse([cx - depth, cy - depth, cx + depth, cy + depth], fill=dark)
    else:  # angry and neutral: a straight mouth, thick when angry
        pen.line([cx - half, cy, cx + half, cy], fill=dark, width=3 * line if face["expression"] == "angry" else line)
    for x in (0.24, 0.76):  # the cheeks: blushing when happy, flushed when angry
        if face["expression"] in CHEEKS:
            pen.ellipse([side * (x - 0.08), side * 0.58, side * (x + 0.08), side * 0.68], fill=CHEEKS[face["expression"]])
    if face["expression"] == "sad":  # a tear under the left eye
        pen.ellipse([side * 0.3, side * 0.56, side * 0.38, side * 0.68], fill=(60, 130, 230))
    inner, outer = BROWS[face["expression"]]
    for sign in (-1, 1):  # left brow, right brow: from the inner end outwards
        pen.line([side * (0.5 + sign * 0.06), side * inner, side * (0.5 + sign * 0.3), side * outer], fill=(20, 20, 20),
                 width=3 * line)


def draw_human(pen: ImageDraw.ImageDraw, face: dict, side: int) -> None:
    pen.ellipse([side * 0.12, side * 0.08, side * 0.88, side * 0.95], fill=FITZPATRICK[face["skin"]])
    pen.chord([side * 0.1, side * 0.02, side * 0.9, side * 0.48], 180, 360, fill=HAIR[face["hair"]])
    for cx in (0.35, 0.65):
        x, y, r = cx * side, 0.47 * side, 0.075 * side
        pen.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255))
        pen.ellipse([x - r / 1.6, y - r / 1.6, x + r / 1.6, y + r / 1.6], fill=EYES[face["eyes"]])
        if face["glasses"]:
            g = r * 1.7
            pen.ellipse([x - g, y - g, x + g, y + g], outline=(10, 10, 10), width=max(2, side // 16))
    if face["glasses"]:
        pen.line([0.45 * side, 0.47 * side, 0.55 * side, 0.47 * side], fill=(10, 10, 10), width=max(2, side // 16))
    draw_mouth(pen, face, side)


def draw_cat(pen: ImageDraw.ImageDraw, face: dict, side: int) -> None:
    fur = FUR[face["fur"]]
    for x in (0.18, 0.62):
        pen.polygon([(x * side, 0.42 * side), ((x + 0.1) * side, 0.05 * side), ((x + 0.2) * side, 0.42 * side)], fill=fur)
    pen.ellipse([side * 0.12, side * 0.2, side * 0.88, side * 0.92], fill=fur)
    for cx in (0.36, 0.64):
        x, y, r = cx * side, 0.5 * side, 0.07 * side
        pen.ellipse([x - r, y - r, x + r, y + r], fill=(200, 220, 40))
    pen.polygon([(0.46 * side, 0.64 * side), (0.54 * side, 0.64 * side), (0.5 * side, 0.7 * side)], fill=(240, 120, 150))
    for dy in (-0.04, 0.04):
        for x1, x2 in ((0.05, 0.38), (0.62, 0.95)):
            pen.line([x1 * side, (0.7 + dy) * side, x2 * side, (0.7 - dy) * side], fill=(20, 20, 20), width=1)


def draw_faces(faces: list[dict], image_size: int) -> tuple[Image.Image, list[list[int]]]:
    """White canvas with the faces side by side (left to right in list order); -> (image, face boxes)."""
    image = Image.new("RGB", (image_size, image_size), (255, 255, 255))
    slot = image_size // len(faces)
    side = round(min(slot, image_size) * (0.78 if len(faces) == 1 else 0.92))
    boxes = []
    for index, face in enumerate(faces):
        tile = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        (draw_human if face["human"] else draw_cat)(ImageDraw.Draw(tile), face, side)
        tile = tile.rotate(TILTS[face["tilt"]], resample=Image.Resampling.BICUBIC)
        x, y = index * slot + (slot - side) // 2, (image_size - side) // 2
        image.paste(tile, (x, y), tile)
        boxes.append([x, y, x + side, y + side])
    return image, boxes


def write_split(out: Path, rng: random.Random, split: str, count: int, image_size: int) -> tuple[list, list]:
    """Annotations (train) or test records, and detailed descriptions, for `count` new images."""
    annotations, detailed = [], []
    for index in range(count):
        faces = make_faces(rng)
        image, boxes = draw_faces(faces, image_size)
        name = f"{split}_{index:06d}.png"
        image.save(out / "images" / name)
        annotations += annotate(rng, f"{split}_{index:06d}", name, faces, split == "test")
        detailed.append({"id": f"{split}_{index:06d}", "image": name, "face_boxes": boxes, "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image in detail."},
            {"from": "gpt", "value": describe(rng, faces)}]})
    return annotations, detailed


def generate(out: str | Path, seed: int = 0, train_images: int = 1500, test_images: int = 150,
             stage1_images: int = 2000, image_size: int = 64) -> dict:
    """Write the shards, the annotations, the held-out records and the tokenizer under `out`."""
    start = time.perf_counter()
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    root = random.Random(seed)
    rngs = {split: random.Random(root.getrandbits(64)) for split in ("stage1", "train", "test")}
    pattern, texts = write_shards(out, rngs["stage1"], stage1_images, 500, image_size)
    train, detailed = write_split(out, rngs["train"], "train", train_images, image_size)
    test, _ = write_split(out, rngs["test"], "test", test_images, image_size)
    for name, records in (("face_train", train), ("face_detailed", detailed), ("face_test", test)):
        (out / f"{name}.json").write_text(json.dumps(records, indent=1) + "\n")
    texts += [r["answer"] for r in train + test] + [r["question"] for r in train + test if r.get("question")]
    texts += [d["conversations"][1]["value"] for d in detailed]
    texts += [q for section in SECTIONS.values() for q in section["questions"]] * 20 + list(TEMPLATE_TEXTS) * 200
    tokenizer = train_tokenizer(texts, out / "tokenizer")
    return {"shards": pattern, "train": str(out / "face_train.json"), "detailed": str(out / "face_detailed.json"),
            "test": str(out / "face_test.json"), "images": str(out / "images"), "tokenizer": str(tokenizer),
            "train_records": len(train), "test_records": len(test), "seconds": round(time.perf_counter() - start, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-images", type=int, default=1500)
    parser.add_argument("--test-images", type=int, default=150)
    parser.add_argument("--stage1-images", type=int, default=2000, help="shapes captions in the stage-1 shards")
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    summary = generate(args.out, args.seed, args.train_images, args.test_images, args.stage1_images, args.image_size)
    print(f"stage 1: captions in {summary['shards']}")
    print(f"train:   {summary['train_records']} annotations in {summary['train']} (details: {summary['detailed']})")
    print(f"test:    {summary['test_records']} records in {summary['test']}")
    print(f"tokenizer: {summary['tokenizer']}")
    print(f"done in {summary['seconds']:.1f} s")


if __name__ == "__main__":
    main()
