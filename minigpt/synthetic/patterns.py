"""Fine patterns: small objects whose look is legible only at full resolution (the sub-image task).

    python dataset/synthetic_patterns.py --out data/patterns --seed 0

Each image (PNG, lossless) shows one square on white, filled in a dark and a light colour with one of
four patterns: horizontal stripes, vertical stripes, checks (1-pixel stripes and squares) or plain, the
plain one in the exact mean of the two colours. Squares sit on even pixel coordinates and have an even side,
so down-scaled by 2 (each 2x2 block of pixels averaged, as a model's global view is) all four patterns
become the same flat square: only a model that also sees the image at full resolution can tell them apart.

Writes, deterministically from the seed:
    DIR/train.json, DIR/test.json   ShareGPT4V layout, one question per image ("question_type": "pattern")
    DIR/images/*.png                the images at full resolution
    DIR/images_half/*.png           the same images with each 2x2 block averaged (the global view alone)
    DIR/tokenizer/                  a sentencepiece tokenizer trained on the questions and answers
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from PIL import Image

from minigpt.models.tokenizer import train_tokenizer

# A pattern pairs a dark colour (even rows, columns or squares) with a light one. Every channel sum of a
# pair is even, so the plain fill (their mean) is exact in 8 bits.
DARK = ((20, 20, 20), (30, 70, 220), (140, 50, 180), (200, 30, 30))
LIGHT = ((240, 210, 20), (120, 230, 120), (250, 170, 80), (160, 220, 250))
PATTERNS = ("horizontal stripes", "vertical stripes", "checks", "plain")
QUESTIONS = ("What pattern fills the small square?", "Which pattern does the small square have?",
             "How is the small square filled?")
TEMPLATE_TEXTS = ("[INST] ", " [/INST] ", "<Img><ImageHere></Img> ", "[vqa] ", "###Human: ", " ###Assistant: ")


def draw(rng: random.Random, pattern: str, image_size: int, side: int) -> Image.Image:
    """White image with one `side`-pixel square in `pattern` at a random even position."""
    first, second = rng.choice(DARK), rng.choice(LIGHT)
    mean = tuple((a + b) // 2 for a, b in zip(first, second))
    left = 2 * rng.randrange((image_size - side) // 2 + 1)
    top = 2 * rng.randrange((image_size - side) // 2 + 1)
    image = Image.new("RGB", (image_size, image_size), (255, 255, 255))
    pixels = image.load()
    for dy in range(side):
        for dx in range(side):
            odd = {"horizontal stripes": dy % 2, "vertical stripes": dx % 2, "checks": (dx + dy) % 2}.get(pattern)
            pixels[left + dx, top + dy] = mean if odd is None else (second if odd else first)
    return image


def write_split(out: Path, rng: random.Random, split: str, count: int, image_size: int, side: int) -> list[dict]:
    records = []
    for index in range(count):
        pattern = PATTERNS[index % len(PATTERNS)]  # balanced classes: chance is exactly 1 / 4
        image = draw(rng, pattern, image_size, side)
        name = f"{split}_{index:05d}.png"
        image.save(out / "images" / name)
        image.reduce(2).save(out / "images_half" / name)  # each 2x2 block averaged, rounded (exact here)
        records.append({"id": f"{split}_{index:05d}", "image": name, "question_type": "pattern", "conversations": [
            {"from": "human", "value": "<image>\n" + rng.choice(QUESTIONS)}, {"from": "gpt", "value": pattern}]})
    rng.shuffle(records)
    (out / f"{split}.json").write_text(json.dumps(records, indent=1) + "\n")
    return records


def generate(out: str | Path, seed: int = 0, train_images: int = 2000, test_images: int = 200,
             image_size: int = 32, side: int = 12) -> dict:
    """Write both splits, both resolutions and the tokenizer under `out`; returns their paths."""
    if image_size % 2 or side % 2 or not 2 <= side <= image_size:
        raise ValueError(f"image size {image_size} and square side {side} must be even, the side at most the size")
    out = Path(out)
    for folder in ("images", "images_half"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    root = random.Random(seed)
    rngs = {split: random.Random(root.getrandbits(64)) for split in ("train", "test")}
    write_split(out, rngs["train"], "train", train_images, image_size, side)
    write_split(out, rngs["test"], "test", test_images, image_size, side)
    texts = list(TEMPLATE_TEXTS) * 50 + list(QUESTIONS) * 50 + list(PATTERNS) * 50
    tokenizer = train_tokenizer(texts, out / "tokenizer")
    return {"train": str(out / "train.json"), "test": str(out / "test.json"), "images": str(out / "images"),
            "images_half": str(out / "images_half"), "tokenizer": str(tokenizer)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--side", type=int, default=12, help="side of the small square in pixels")
    args = parser.parse_args()
    for name, path in generate(args.out, args.seed, args.train_images, args.test_images, args.image_size,
                               args.side).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
