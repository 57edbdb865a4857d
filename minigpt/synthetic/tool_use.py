"""Synthetic tool use: requests about shapes images, answered by calling the agent's classical tools.

    python dataset/synthetic_tool_use.py --out data/tools --seed 0

Writes, deterministically from the seed:
    DIR/shards/...            stage-1 captions of shapes images (as shapes.py writes them)
    DIR/tool_train.json       tool-use records (the `tool_use` builder's layout, below)
    DIR/tool_test.json        held out: colour-shape combinations never seen in training
    DIR/images/*.png          the images of both
    DIR/tokenizer/            a tokenizer trained on the captions and the tool-use text

A record is {"id", "image", "kind", "request", "steps": [{"name", "arguments", "result"}], "answer",
"target": {"color", "shape", "box"}}. Kinds:
    blur / pixelate   "Blur the square." (one shape): find_color_regions with the colour seen, then
                      blur_region / pixelate_region on the box it returned
    cutout            "Cut out the circle and name its color.": find_color_regions, cutout
                      (each of the three answers "Done: img_1; its color is red.", see edit_record)
    count             "How many blue shapes are there?" (2-3 shapes): find_color_regions, the count
In training each image is asked every request it answers (scene_kinds), the held-out ones one each.
Every result is what the real tool returns on the image, so a model trained here sees at run time
exactly what it saw in training. The first three kinds need the image (the colour is not in the
request); held-out images pair each shape with colours it never had in training.
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

import numpy as np

from minigpt.agents.classical import classical_tools
from minigpt.agents.images import ImageStore
from minigpt.agents.tool import Toolbox
from minigpt.conversation.boxes import box_iou
from minigpt.conversation.tool_calls import format_tool_call, tool_result_text, tools_line
from minigpt.models.tokenizer import train_tokenizer
from minigpt.synthetic.shapes import COLORS, NUMBERS, SHAPES, SIZES, draw, place, position_of, write_shards

VERBS = {"blur": ("Blur the {shape}.", "blur_region"), "pixelate": ("Pixelate the {shape}.", "pixelate_region"),
         "cutout": ("Cut out the {shape} and name its color.", "cutout"), "count": ("How many {color} shapes are there?", None)}
KINDS = tuple(VERBS)
EDIT_KINDS = ("blur", "pixelate", "cutout")
# Held out: each shape with two colours it never has in training.
HELD_OUT = {("circle", "red"), ("circle", "green"), ("square", "blue"), ("square", "yellow"),
            ("triangle", "purple"), ("triangle", "orange")}


def tool_names() -> list[str]:
    """The tools a request offers: every classical tool, in the agent's order."""
    return [tool.name for tool in classical_tools()]


def one_shape_scene(rng: random.Random, image_size: int, held_out: bool) -> list[dict]:
    pairs = [(s, c) for s in SHAPES for c in COLORS if ((s, c) in HELD_OUT) == held_out]
    shape, color = rng.choice(pairs)
    size = rng.choice(list(SIZES))
    box = place(rng, round(SIZES[size] * image_size), image_size, [])
    return [{"shape": shape, "color": color, "size": size, "position": position_of(box, image_size), "bbox": box}]


def many_shapes_scene(rng: random.Random, image_size: int) -> list[dict]:
    while True:
        shapes = []
        for shape in rng.sample(SHAPES, rng.randint(2, 3)):
            size = rng.choice(list(SIZES))
            box = place(rng, round(SIZES[size] * image_size), image_size, [s["bbox"] for s in shapes])
            if box is None:
                break
            shapes.append({"shape": shape, "color": rng.choice(list(COLORS)), "size": size,
                           "position": position_of(box, image_size), "bbox": box})
        else:
            return shapes


def run_steps(toolbox: Toolbox, calls: list[tuple[str, dict]]) -> list[dict] | None:
    """Each call run for real; None when one fails (the scene is then drawn again)."""
    steps = []
    for name, arguments in calls:
        observation = toolbox.call(name, arguments)
        if not observation.ok:
            return None
        steps.append({"name": name, "arguments": arguments, "result": observation.result})
    return steps


def make_records(rng: random.Random, kinds: tuple[str, ...], image_size: int, split: str, folder: Path, index: int,
                 work: Path) -> list[dict]:
    """The records of one drawn scene, asked each of `kinds` (a count scene: each of its colours), its
    image written; [] when the tools do not see the scene as drawn. Each record is its own conversation
    on the image (its edit makes img_1)."""
    count = kinds == ("count",)
    shapes = many_shapes_scene(rng, image_size) if count else one_shape_scene(rng, image_size, split == "test")
    image = np.asarray(draw(shapes, image_size))
    boxes = [Toolbox(classical_tools(), ImageStore(work / f"{split}_{index}_{n}")) for n in range(3)]
    handle = [toolbox.images.add(image) for toolbox in boxes][0]
    if count:
        colors = [rng.choice(shapes)["color"]] if split == "test" else sorted({s["color"] for s in shapes})
        made = [count_record(toolbox, handle, shapes, color) for toolbox, color in zip(boxes, colors)]
    else:
        made = [edit_record(toolbox, handle, kind, shapes[0]) for toolbox, kind in zip(boxes, kinds)]
    if any(record is None for record in made):
        return []
    name = f"{split}_{index:06d}.png"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    boxes[0].images.path(handle).replace(folder / "images" / name)
    return [{"id": f"{split}_{index:06d}" + (f"_{number}" if len(made) > 1 else ""), "image": name,
             "kind": "count" if count else kinds[number], "request": f"{request} (image: {handle})",
             "tools": tool_names(), "steps": steps, "answer": answer,
             "target": {"color": target["color"], "shape": target["shape"], "box": target["bbox"]}}
            for number, (request, steps, answer, target) in enumerate(made)]


def count_record(toolbox: Toolbox, handle: str, shapes: list[dict], color: str) -> tuple | None:
    """(request, steps, answer, target) of "How many <color> shapes are there?", or None when the tool's
    count is not the scene's."""
    found = run_steps(toolbox, [("find_color_regions", {"image": handle, "color": color})])
    true_count = sum(s["color"] == color for s in shapes)
    if found is None or found[0]["result"]["count"] != true_count:
        return None
    answer = f"There {'is' if true_count == 1 else 'are'} {NUMBERS[true_count]}."
    return VERBS["count"][0].format(color=color), found, answer, next(s for s in shapes if s["color"] == color)


def edit_record(toolbox: Toolbox, handle: str, kind: str, target: dict) -> tuple | None:
    """(request, steps, answer, target) of a blur, pixelate or cutout request about the one shape, or None
    when the tool does not find that shape as drawn. All three answer alike, naming the new image and
    the colour the call named: "Done: img_1; its color is red." The answer names no shape: the request
    already did, and a tiny model writing a shape after the colour it has just used writes the shape
    that colour had in training ("Cut out the triangle ...; its color is red." for a red circle, in
    three of four held-out cutouts of one training seed). Nor "Done: img_1." for two kinds and a
    description for the third: the model then ended cutouts with "Done"."""
    found = run_steps(toolbox, [("find_color_regions", {"image": handle, "color": target["color"]})])
    if found is None or found[0]["result"]["count"] != 1 or box_iou(found[0]["result"]["boxes"][0], target["bbox"]) < 0.9:
        return None
    template, editor = VERBS[kind]
    edited = run_steps(toolbox, [(editor, {"image": handle, "box": found[0]["result"]["boxes"][0]})])
    if edited is None:
        return None
    answer = f"Done: {edited[0]['result']['image']}; its color is {target['color']}."
    return template.format(shape=target["shape"]), found + edited, answer, target


def record_texts(record: dict, names: list[str]) -> list[str]:
    """The text a record trains on, for the tokenizer's corpus."""
    texts = [record["request"], tools_line(names), record["answer"]]
    for step in record["steps"]:
        texts += [format_tool_call(step["name"], step["arguments"]), tool_result_text(step["name"], json.dumps(step["result"]))]
    return texts


def scene_kinds(split: str, drawn: int) -> tuple[str, ...]:
    """What the next scene is asked. Held out: one request, the kinds in turn. Training: a one-shape image
    is asked all three edit requests and a count image each of its colours (two one-shape scenes to one
    count scene), so that what the request decides, the tool (blur or pixelate) or the colour to count,
    can only be learned from the request: one image asked one question lets a tiny model tie the answer
    to the image instead (it then blurred held-out images it was asked to pixelate, or counted a
    colour it saw instead of the one asked). What only the image tells, the colour of the one shape, stays
    the image's to tell."""
    if split == "test":
        return (KINDS[drawn % len(KINDS)],)
    return ("count",) if drawn % 3 == 2 else EDIT_KINDS


def write_split(out: Path, rng: random.Random, split: str, count: int, image_size: int) -> list[dict]:
    records, index, drawn = [], 0, 0
    with tempfile.TemporaryDirectory() as work:  # the tools' own copies of each image
        while len(records) < count:
            made = make_records(rng, scene_kinds(split, drawn), image_size, split, out, index, Path(work))
            index, drawn = index + 1, drawn + bool(made)
            records += made[:count - len(records)]
    (out / f"tool_{split}.json").write_text(json.dumps(records, indent=1) + "\n")
    return records


def generate(out: str | Path, seed: int = 0, stage1_images: int = 2000, train_records: int = 2000,
             test_records: int = 200, image_size: int = 64, shard_size: int = 500) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    root = random.Random(seed)
    rngs = {split: random.Random(root.getrandbits(64)) for split in ("stage1", "train", "test")}
    pattern, texts = write_shards(out, rngs["stage1"], stage1_images, shard_size, image_size)
    splits = {split: write_split(out, rngs[split], split, count, image_size)
              for split, count in (("train", train_records), ("test", test_records))}
    names = tool_names()
    for record in splits["train"]:
        texts += record_texts(record, names)
    texts += [*COLORS, *SHAPES, *NUMBERS.values(), *names] * 50 + ["###Human: ", " ###Assistant: ", "###"] * 200
    # A colour is one token wherever it stands, so the colour a call names ('"color": "red"') is the word
    # stage 1 learned to read from the image ("a large red circle"), not a second word learned from the
    # tool records alone, where the request's shape points at a training colour; a pixel coordinate is
    # one token, so a box is copied from a result as 4 tokens, not 7-8 digits that a tiny model reorders.
    symbols = (*COLORS, *(str(n) for n in range(image_size + 1)))
    tokenizer = train_tokenizer(texts, out / "tokenizer", vocab_size=1024, symbols=symbols)
    return {"shards": pattern, "train": str(out / "tool_train.json"), "test": str(out / "tool_test.json"),
            "images": str(out / "images"), "tokenizer": str(tokenizer)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-records", type=int, default=2000)
    parser.add_argument("--test-records", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(generate(args.out, args.seed, train_records=args.train_records, test_records=args.test_records),
                     indent=1))


if __name__ == "__main__":
    main()
