"""Synthetic shapes: a vision-language task that needs no download and that a tiny model can learn.

    python dataset/synthetic_shapes.py --out data/shapes --seed 0

Writes, deterministically from the seed (same seed -> identical files):
    DIR/shards/shapes-000000.tar ...   stage 1: webdataset shards; each sample has `jpg`, `txt` (the caption)
                                       and `json` {"caption", "image_size", "shapes": [...]}
    DIR/shards/index.json              shard names, sample counts and the brace pattern
    DIR/train.json                     stage 2: ShareGPT4V-layout conversations, 2-3 questions per image
    DIR/test.json                      held out: one question per record, with "question_type"
    DIR/grounding_train.json           MiniGPT-v2 grounding in the same layout, with a "task" per record:
                                       [refer] expression -> box, [identify] box -> expression,
                                       [grounding] description with <p>phrase</p> {box} pairs
    DIR/grounding_test.json            held out: one [refer] question per image, with the pixel "box" (and
                                       "boxes": those of every shape in the image)
    DIR/images/*.jpg                   the images all of the JSON files refer to
    DIR/tokenizer/                     a sentencepiece BPE tokenizer trained on all of the text above

Each image shows 1-3 filled shapes of distinct types on white. A shape has a colour, a size and a
position: the cell of a 3x3 grid its centre lies in (one shape per cell, centres kept away from the
cell borders, so a position is never ambiguous). Questions ask for the colours in the image, a shape's
colour, the shape of a colour, the number of shapes, where a shape is, or for a caption; answers are
always the same short canonical words.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import random
import time
from pathlib import Path

from PIL import Image, ImageDraw

from minigpt.conversation.boxes import box_tokens
from minigpt.models.tokenizer import train_tokenizer

COLORS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (30, 70, 220),
          "yellow": (240, 210, 20), "purple": (140, 50, 180), "orange": (245, 130, 20)}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": 0.2, "large": 0.4}  # side of the shape's box, as a fraction of the image side
POSITIONS = (("top left", "top", "top right"), ("left", "center", "right"), ("bottom left", "bottom", "bottom right"))
NUMBERS = {1: "one", 2: "two", 3: "three"}
MARGIN = 0.04  # a shape's centre stays this far (fraction of the side) from its grid cell's borders
GAP = 0.06  # fraction of the side kept clear between the boxes of two shapes (JPEG must not join them)

QUESTIONS = {
    "colors": ("What colors are in the image?", "Which colors do you see?", "Name the colors of the shapes."),
    "color": ("What color is the {shape}?", "What colour is the {shape}?", "Which color is the {shape}?"),
    "shape": ("What shape is the {color} object?", "Which shape is {color}?", "What is the shape of the {color} object?"),
    "count": ("How many shapes are there?", "How many objects are in the image?", "Count the shapes in this image."),
    "position": ("Where is the {color} {shape}?", "Where is the {color} {shape} located?",
                 "In which part of the image is the {color} {shape}?"),
    "caption": ("Describe this image.", "What is in this image?", "Describe the shapes in this picture."),
}
TRAIN_WEIGHTS = {"colors": 1.0, "color": 1.0, "shape": 1.0, "count": 1.0, "position": 1.0, "caption": 0.3}
TEST_WEIGHTS = {"color": 1.0, "shape": 1.0, "count": 1.0, "position": 1.0, "caption": 0.5}  # after a "colors" one
TEMPLATE_TEXTS = ("###Human: ", " ###Assistant: ", "###", "[INST] ", " [/INST] ", "<Img><ImageHere></Img> ",
                  "Describe this image in detail.", "Take a look at this image and describe what you notice.",
                  "Please provide a detailed description of the picture.",
                  "Could you describe the contents of this image for me?")


# -----------------------------------------------------------------------------
# scenes and images

def position_of(bbox: list[int], image_size: int) -> str:
    """Name of the 3x3 grid cell that holds the centre of `bbox`."""
    cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    return POSITIONS[min(int(3 * cy / image_size), 2)][min(int(3 * cx / image_size), 2)]


def place(rng: random.Random, side: int, image_size: int, taken: list[list[int]]) -> list[int] | None:
    """A box of `side` pixels centred well inside a free grid cell, clear of `taken`; None if none fits."""
    margin, gap = MARGIN * image_size, round(GAP * image_size)
    used = {position_of(box, image_size) for box in taken}
    for _ in range(50):
        row, col = rng.randrange(3), rng.randrange(3)
        if POSITIONS[row][col] in used:
            continue
        corner = []
        for cell in (col, row):
            low = max(0, math.ceil(cell * image_size / 3 + margin - side / 2))
            high = min(image_size - side, math.floor((cell + 1) * image_size / 3 - margin - side / 2))
            if low > high:
                break
            corner.append(rng.randint(low, high))
        if len(corner) < 2:
            continue
        box = [corner[0], corner[1], corner[0] + side, corner[1] + side]
        if all(box[2] + gap <= o[0] or o[2] + gap <= box[0] or box[3] + gap <= o[1] or o[3] + gap <= box[1]
               for o in taken):
            return box
    return None


def make_scene(rng: random.Random, image_size: int) -> list[dict]:
    """1-3 non-overlapping shapes of distinct types; colours may repeat. Starts over if one will not fit."""
    while True:
        shapes = []
        for shape in rng.sample(SHAPES, rng.randint(1, 3)):
            size = rng.choice(list(SIZES))
            color = rng.choice(list(COLORS))
            box = place(rng, round(SIZES[size] * image_size), image_size, [s["bbox"] for s in shapes])
            if box is None:
                break
            shapes.append({"shape": shape, "color": color, "size": size,
                           "position": position_of(box, image_size), "bbox": box})
        else:
            return shapes


def draw(shapes: list[dict], image_size: int) -> Image.Image:
    """White canvas, each shape filled inside its box (x2, y2 exclusive); no antialiasing, exact colours."""
    image = Image.new("RGB", (image_size, image_size), (255, 255, 255))
    pen = ImageDraw.Draw(image)
    for s in shapes:
        x1, y1, x2, y2 = s["bbox"]
        fill = COLORS[s["color"]]
        if s["shape"] == "circle":
            pen.ellipse([x1, y1, x2 - 1, y2 - 1], fill=fill)
        elif s["shape"] == "square":
            pen.rectangle([x1, y1, x2 - 1, y2 - 1], fill=fill)
        else:  # apex up, so the box centre is inside
            pen.polygon([((x1 + x2 - 1) / 2, y1), (x1, y2 - 1), (x2 - 1, y2 - 1)], fill=fill)
    return image


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


# -----------------------------------------------------------------------------
# text

def join_words(items: list[str]) -> str:
    """["a", "b", "c"] -> "a, b and c"."""
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else items[0]


def caption(shapes: list[dict]) -> str:
    """e.g. "a large red circle at the top left and a small blue square on the right." """
    parts = []
    for s in shapes:
        preposition = {"left": "on the", "right": "on the", "center": "in the"}.get(s["position"], "at the")
        parts.append(f"a {s['size']} {s['color']} {s['shape']} {preposition} {s['position']}")
    return join_words(parts) + "."


def ask(rng: random.Random, kind: str, shapes: list[dict]) -> tuple[str, str, tuple] | None:
    """(question, answer, subject) of `kind` about the scene, or None when the scene cannot answer it."""
    phrasing = rng.choice(QUESTIONS[kind])
    if kind == "color":
        target = rng.choice(shapes)
        return phrasing.format(shape=target["shape"]), target["color"], (kind, target["shape"])
    if kind == "shape":
        colors = [s["color"] for s in shapes]
        unique = [s for s in shapes if colors.count(s["color"]) == 1]
        if not unique:
            return None
        target = rng.choice(unique)
        return phrasing.format(color=target["color"]), target["shape"], (kind, target["shape"])
    if kind == "position":
        target = rng.choice(shapes)
        return phrasing.format(color=target["color"], shape=target["shape"]), target["position"], (kind, target["shape"])
    if kind == "colors":  # the distinct colours in a fixed order, e.g. "red, green and blue"
        present = [color for color in COLORS if any(s["color"] == color for s in shapes)]
        return phrasing, join_words(present), (kind,)
    if kind == "count":
        return phrasing, NUMBERS[len(shapes)], (kind,)
    return phrasing, caption(shapes), (kind,)


def pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def turn_pair(question: str, answer: str, first: bool) -> list[dict]:
    return [{"from": "human", "value": ("<image>\n" if first else "") + question}, {"from": "gpt", "value": answer}]


def grounding_records(rng: random.Random, index: int, shapes: list[dict], image: str, split: str,
                      image_size: int) -> list[dict]:
    """Train: a [refer] record per shape, an [identify] record per image, and sometimes a [grounding]
    description. Held out: one [refer] record per image, keeping the target's pixel box for IoU scoring."""
    def box(s: dict) -> str:
        return box_tokens(*s["bbox"], image_size, image_size)

    def expression(s: dict) -> str:
        return f"the {s['color']} {s['shape']}"

    def refer(s: dict, suffix: str = "") -> dict:
        return {"id": f"{split}_refer_{index:06d}{suffix}", "image": image, "task": "refer",
                "conversations": turn_pair(expression(s), box(s), first=True)}

    target = rng.choice(shapes)
    if split != "train":
        # "boxes": every shape of the image, for the baseline that boxes any shape whatever the description
        return [{**refer(target), "box": target["bbox"], "boxes": [s["bbox"] for s in shapes]}]
    records = [refer(s, f"_{number}") for number, s in enumerate(shapes)]
    records.append({"id": f"{split}_identify_{index:06d}", "image": image, "task": "identify",
                    "conversations": turn_pair(box(target), expression(target), first=True)})
    if rng.random() < 0.3:
        described = join_words([f"<p>a {s['size']} {s['color']} {s['shape']}</p> {box(s)}" for s in shapes])
        records.append({"id": f"{split}_grounding_{index:06d}", "image": image, "task": "grounding",
                        "conversations": turn_pair(rng.choice(QUESTIONS["caption"]), described, first=True)})
    return records


# -----------------------------------------------------------------------------
# the splits

def write_shards(out: Path, rng: random.Random, count: int, shard_size: int, image_size: int) -> tuple[str, list[str]]:
    """Stage-1 captions as webdataset shards (mtime 0, so the tar bytes are reproducible)."""
    import webdataset as wds

    folder = out / "shards"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("shapes-*.tar"):
        stale.unlink()
    shards, captions = [], []
    for start in range(0, count, shard_size):
        name = f"shapes-{start // shard_size:06d}.tar"
        stop = min(start + shard_size, count)
        with wds.TarWriter(str(folder / name), encoder=False, mtime=0) as sink:
            for index in range(start, stop):
                shapes = make_scene(rng, image_size)
                text = caption(shapes)
                meta = {"caption": text, "image_size": image_size, "shapes": shapes}
                sink.write({"__key__": f"s1_{index:06d}", "jpg": jpeg(draw(shapes, image_size)),
                            "json": json.dumps(meta).encode("utf-8"), "txt": text.encode("utf-8")})
                captions.append(text)
        shards.append({"name": name, "samples": stop - start})
    pattern = f"shapes-{{000000..{len(shards) - 1:06d}}}.tar" if shards else ""
    index = {"pattern": pattern, "samples": count, "shards": shards}
    (folder / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return (str(folder / pattern) if shards else ""), captions


def train_records(rng: random.Random, index: int, shapes: list[dict], image: str) -> list[dict]:
    """One record per image with 2-3 distinct questions, kinds drawn by TRAIN_WEIGHTS."""
    wanted, turns, asked = rng.randint(2, 3), [], set()
    while len(asked) < wanted:
        qa = ask(rng, pick(rng, TRAIN_WEIGHTS), shapes)
        if qa is None or qa[2] in asked:
            continue
        asked.add(qa[2])
        turns += turn_pair(qa[0], qa[1], first=not turns)
    return [{"id": f"train_{index:06d}", "image": image, "conversations": turns}]


def heldout_records(rng: random.Random, index: int, shapes: list[dict], image: str) -> list[dict]:
    """Two one-question records per image (ids come later): which colours, then another kind."""
    records = []
    for weights in ({"colors": 1.0}, TEST_WEIGHTS):
        qa = None
        while qa is None:
            qa = ask(rng, pick(rng, weights), shapes)
        records.append({"image": image, "question_type": qa[2][0], "conversations": turn_pair(qa[0], qa[1], True)})
    return records


def write_conversations(out: Path, rng: random.Random, split: str, count: int, image_size: int) -> list[dict]:
    """Stage-2 / held-out records in the ShareGPT4V layout, images under DIR/images/."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for index in range(count):
        shapes = make_scene(rng, image_size)
        image = f"{split}_{index:06d}.jpg" if split == "train" else f"{split}_img_{index:06d}.jpg"
        (out / "images" / image).write_bytes(jpeg(draw(shapes, image_size)))
        if split.startswith("grounding"):
            records += grounding_records(rng, index, shapes, image, split.removeprefix("grounding_"), image_size)
        elif split == "train":
            records += train_records(rng, index, shapes, image)
        else:
            records += heldout_records(rng, index, shapes, image)
    if split == "test":  # several records share an image, so records get their own numbers
        records = [{"id": f"{split}_{number:06d}", **record} for number, record in enumerate(records)]
    (out / f"{split}.json").write_text(json.dumps(records, indent=1) + "\n")
    return records


def generate(out: str | Path, seed: int = 0, stage1_images: int = 2000, train_images: int = 2000,
             test_images: int = 300, image_size: int = 64, shard_size: int = 500, grounding_images: int = 2000,
             grounding_test_images: int = 300) -> dict:
    """Write every split and the tokenizer under `out`; returns paths and counts."""
    if image_size < 32:
        raise ValueError("--image-size must be at least 32 pixels")
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # One generator per split, so changing one split's size leaves the others unchanged.
    root = random.Random(seed)
    rngs = {split: random.Random(root.getrandbits(64))
            for split in ("stage1", "train", "test", "grounding_train", "grounding_test")}

    pattern, texts = write_shards(out, rngs["stage1"], stage1_images, shard_size, image_size)
    records = {split: write_conversations(out, rngs[split], split, count, image_size)
               for split, count in (("train", train_images), ("test", test_images))}
    for split, count in (("grounding_train", grounding_images), ("grounding_test", grounding_test_images)):
        # Kept out of the tokenizer corpus, so adding them left the tokenizer (and every earlier result)
        # unchanged; their digits and braces fall back to byte tokens, one per character.
        write_conversations(out, rngs[split], split, count, image_size)
    for split_records in records.values():
        for record in split_records:
            texts += [turn["value"].removeprefix("<image>\n") for turn in record["conversations"]]
    # Templates, questions and answer words repeat enough to become pieces even in a small corpus.
    questions = [q for phrasings in QUESTIONS.values() for q in phrasings]
    answers = [*COLORS, *SHAPES, *NUMBERS.values(), *(p for row in POSITIONS for p in row)]
    texts += list(TEMPLATE_TEXTS) * 200 + questions * 20 + answers * 50
    tokenizer = train_tokenizer(texts, out / "tokenizer")

    return {"shards": pattern, "train": str(out / "train.json"), "test": str(out / "test.json"),
            "grounding_train": str(out / "grounding_train.json"), "grounding_test": str(out / "grounding_test.json"),
            "images": str(out / "images"), "tokenizer": str(tokenizer),
            "stage1_samples": stage1_images, "train_records": len(records["train"]),
            "test_records": len(records["test"]), "seconds": round(time.perf_counter() - start, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage1-images", type=int, default=2000, help="caption samples in the shards")
    parser.add_argument("--train-images", type=int, default=2000, help="images of train.json")
    parser.add_argument("--test-images", type=int, default=300, help="images of test.json (2 records each)")
    parser.add_argument("--grounding-images", type=int, default=2000, help="images of grounding_train.json")
    parser.add_argument("--grounding-test-images", type=int, default=300, help="images of grounding_test.json")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--shard-size", type=int, default=500, help="samples per webdataset shard")
    args = parser.parse_args()
    summary = generate(args.out, args.seed, args.stage1_images, args.train_images, args.test_images,
                       args.image_size, args.shard_size, args.grounding_images, args.grounding_test_images)
    print(f"stage 1: {summary['stage1_samples']} captions in {summary['shards']}")
    print(f"stage 2: {summary['train_records']} records in {summary['train']}")
    print(f"test:    {summary['test_records']} records in {summary['test']}")
    print(f"grounding: {summary['grounding_train']} and {summary['grounding_test']}")
    print(f"images:  {summary['images']}")
    print(f"tokenizer: {summary['tokenizer']}")
    print(f"done in {summary['seconds']:.1f} s")


if __name__ == "__main__":
    main()
