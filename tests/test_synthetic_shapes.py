"""Synthetic shapes data: reproducible, in the layouts the loaders read, and every answer true of its image.

Answers are checked against the pixels, not against the generator: the saved JPEG is segmented into
shapes (they never touch) and each shape's colour, type, size and grid cell is read back.
"""
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from minigpt.synthetic import shapes as shapes_mod

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "dataset" / "synthetic_shapes.py"

SMALL = dict(stage1_images=40, train_images=40, test_images=20, image_size=64, shard_size=16, grounding_images=30,
             grounding_test_images=10)
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes") / "seed0"
    shapes_mod.generate(out, seed=0, **SMALL)
    return out


# -----------------------------------------------------------------------------
# reading a scene back from the pixels

def segment(image: Image.Image) -> list[dict]:
    """Connected non-white regions -> [{"color", "shape", "size", "position", "bbox"}] (palette nearest)."""
    rgb = image.convert("RGB")
    size = rgb.width
    ink = {(x, y) for x in range(size) for y in range(size) if min(rgb.getpixel((x, y))) < 180}
    found = []
    while ink:
        stack, region = [ink.pop()], []
        while stack:
            x, y = stack.pop()
            region.append((x, y))
            for near in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
                if near in ink:
                    ink.remove(near)
                    stack.append(near)
        if len(region) < 12:  # JPEG ringing, not a shape
            continue
        xs, ys = [p[0] for p in region], [p[1] for p in region]
        bbox = [min(xs), min(ys), max(xs) + 1, max(ys) + 1]
        centre = ((bbox[0] + bbox[2]) // 2, (bbox[1] + bbox[3]) // 2)
        fill = len(region) / ((bbox[2] - bbox[0]) * (bbox[3] - bbox[1]))
        found.append({"color": nearest_color(rgb.getpixel(centre)),
                      "shape": "square" if fill > 0.9 else "circle" if fill > 0.66 else "triangle",
                      "size": "large" if bbox[2] - bbox[0] > 0.3 * size else "small",
                      "position": shapes_mod.position_of(bbox, size), "bbox": bbox})
    return found


def nearest_color(pixel) -> str:
    return min(shapes_mod.COLORS, key=lambda name: sum((a - b) ** 2 for a, b in zip(pixel, shapes_mod.COLORS[name])))


def color_distance(pixel, name: str) -> int:
    return max(abs(a - b) for a, b in zip(pixel, shapes_mod.COLORS[name]))


def caption_parts(caption: str) -> set[tuple[str, str, str, str]]:
    """"a large red circle at the top left, ... and ..." -> {(size, color, shape, position)}."""
    assert caption.endswith(".")
    parts = caption[:-1].replace(" and a ", ", a ").split(", ")
    found = set()
    for part in parts:
        words = part.split()
        assert words[0] == "a" and words[4] in ("at", "on", "in") and words[5] == "the", part
        found.add((words[1], words[2], words[3], " ".join(words[6:])))
    return found


def check_answer(question: str, answer: str, scene: list[dict]) -> str:
    """Assert `answer` is true of `scene` (decoded from pixels); return the question's kind."""
    by_shape = {s["shape"]: s for s in scene}
    for kind, phrasings in shapes_mod.QUESTIONS.items():
        for phrasing in phrasings:
            for shape in (*shapes_mod.SHAPES, None):
                for color in (*shapes_mod.COLORS, None):
                    if phrasing.format(shape=shape, color=color) != question:
                        continue
                    if kind == "colors":
                        present = [c for c in shapes_mod.COLORS if any(s["color"] == c for s in scene)]
                        assert answer.replace(",", "").replace(" and ", " ").split() == present
                    elif kind == "color":
                        assert by_shape[shape]["color"] == answer
                    elif kind == "shape":
                        assert [s["shape"] for s in scene if s["color"] == color] == [answer]
                    elif kind == "position":
                        assert by_shape[shape]["color"] == color and by_shape[shape]["position"] == answer
                    elif kind == "count":
                        assert NUMBER_WORDS[answer] == len(scene)
                    else:
                        expected = {(s["size"], s["color"], s["shape"], s["position"]) for s in scene}
                        assert caption_parts(answer) == expected
                    return kind
    raise AssertionError(f"unknown question {question!r}")


# -----------------------------------------------------------------------------
# tests

def test_same_seed_same_files_other_seed_differs(data, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    shapes_mod.generate(again, seed=0, **SMALL)
    shapes_mod.generate(other, seed=1, **SMALL)
    files = ["train.json", "test.json", "grounding_train.json", "grounding_test.json", "shards/index.json", "tokenizer/tokenizer.model", "tokenizer/tokenizer.json"]
    files += [f"shards/shapes-{i:06d}.tar" for i in range(3)]
    for name in files:
        assert (data / name).read_bytes() == (again / name).read_bytes(), name
    images = sorted(p.name for p in (data / "images").iterdir())
    assert images == sorted(p.name for p in (again / "images").iterdir())
    for name in images:
        assert Image.open(data / "images" / name).tobytes() == Image.open(again / "images" / name).tobytes()
    assert (data / "train.json").read_bytes() != (other / "train.json").read_bytes()
    assert (data / "shards/shapes-000000.tar").read_bytes() != (other / "shards/shapes-000000.tar").read_bytes()
    assert Image.open(data / "images" / images[0]).tobytes() != Image.open(other / "images" / images[0]).tobytes()


def test_shards_read_back_with_webdataset(data):
    index = json.loads((data / "shards" / "index.json").read_text())
    assert index["pattern"] == "shapes-{000000..000002}.tar"
    assert [(s["name"], s["samples"]) for s in index["shards"]] == [
        ("shapes-000000.tar", 16), ("shapes-000001.tar", 16), ("shapes-000002.tar", 8)]
    samples = list(wds.WebDataset(str(data / "shards" / index["pattern"]), shardshuffle=False).decode("pil"))
    assert len(samples) == index["samples"] == 40
    assert [s["__key__"] for s in samples] == [f"s1_{i:06d}" for i in range(40)]
    for sample in samples:
        meta, image = sample["json"], sample["jpg"]
        assert image.size == (64, 64) and image.mode == "RGB"
        assert sample["txt"] == meta["caption"]
        assert 1 <= len(meta["shapes"]) <= 3
        assert len({s["shape"] for s in meta["shapes"]}) == len(meta["shapes"])
        for shape in meta["shapes"]:
            x1, y1, x2, y2 = shape["bbox"]
            assert color_distance(image.getpixel(((x1 + x2) // 2, (y1 + y2) // 2)), shape["color"]) < 40
            assert shape["position"] == shapes_mod.position_of(shape["bbox"], 64)
        expected = {(s["size"], s["color"], s["shape"], s["position"]) for s in meta["shapes"]}
        assert caption_parts(meta["caption"]) == expected
        # The pixels hold exactly the described shapes, none touching another.
        decoded = {(s["size"], s["color"], s["shape"], s["position"]) for s in segment(image)}
        assert decoded == expected


def test_train_conversations_are_true_of_their_images(data):
    records = json.loads((data / "train.json").read_text())
    assert [r["id"] for r in records] == [f"train_{i:06d}" for i in range(40)]
    kinds = Counter()
    for record in records:
        turns = record["conversations"]
        assert record["image"] == record["id"] + ".jpg"
        assert 4 <= len(turns) <= 6 and len(turns) % 2 == 0
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        assert turns[0]["value"].startswith("<image>\n")
        assert not any("<image>" in t["value"] for t in turns[1:])
        scene = segment(Image.open(data / "images" / record["image"]))
        questions = [t["value"].removeprefix("<image>\n") for t in turns[0::2]]
        assert len(set(questions)) == len(questions)
        for question, answer in zip(questions, (t["value"] for t in turns[1::2])):
            kinds[check_answer(question, answer, scene)] += 1
    assert {"colors", "color", "shape", "count", "position"} <= set(kinds)


def test_held_out_split_has_one_question_per_record(data):
    records = json.loads((data / "test.json").read_text())
    assert len(records) == 40
    assert len({r["id"] for r in records}) == len(records) and records[7]["id"] == "test_000007"
    train_images = {r["image"] for r in json.loads((data / "train.json").read_text())}
    for record in records:
        human, gpt = record["conversations"]
        assert (human["from"], gpt["from"]) == ("human", "gpt")
        assert human["value"].startswith("<image>\n") and record["image"] not in train_images
        scene = segment(Image.open(data / "images" / record["image"]))
        assert check_answer(human["value"].removeprefix("<image>\n"), gpt["value"], scene) == record["question_type"]
    types = Counter(r["question_type"] for r in records)
    assert set(types) <= {"colors", "color", "shape", "count", "position", "caption"}
    assert types["colors"] == len(records) / 2  # one per image, and one other question


def test_grounding_boxes_and_expressions_are_true_of_their_images(data):
    from minigpt.conversation.boxes import box_iou, parse_boxes

    def located(text, scene):
        parsed = parse_boxes(text, 64, 64)
        assert not parsed.problems and parsed.boxes
        return [(b.label, max(scene, key=lambda s: box_iou(b.box, s["bbox"]))) for b in parsed.boxes
                if max(box_iou(b.box, s["bbox"]) for s in scene) > 0.75]

    train = json.loads((data / "grounding_train.json").read_text())
    tasks = Counter(r["task"] for r in train)
    assert tasks["identify"] == 30 and 0 < tasks["grounding"] < 30
    images = {r["image"] for r in train}
    assert tasks["refer"] == sum(len(segment(Image.open(data / "images" / image))) for image in images)  # one per shape
    for record in train:
        scene = segment(Image.open(data / "images" / record["image"]))
        question, answer = (t["value"].removeprefix("<image>\n") for t in record["conversations"])
        if record["task"] == "refer":
            [(_, shape)] = located(answer, scene)
            assert question == f"the {shape['color']} {shape['shape']}"
        elif record["task"] == "identify":
            [(_, shape)] = located(question, scene)
            assert answer == f"the {shape['color']} {shape['shape']}"
        else:
            found = located(answer, scene)
            assert len(found) == len(scene)
            assert all(label == f"a {s['size']} {s['color']} {s['shape']}" for label, s in found)
    test = json.loads((data / "grounding_test.json").read_text())
    assert len(test) == 10 and all(r["task"] == "refer" for r in test)
    for record in test:
        box = parse_boxes(record["conversations"][1]["value"], 64, 64).boxes[0].box
        assert box_iou(box, record["box"]) > 0.9


def test_tokenizer_covers_the_text(data):
    from minigpt.models.tokenizer import load_tokenizer

    tok = load_tokenizer(data / "tokenizer")
    single = [*shapes_mod.COLORS, *shapes_mod.SHAPES, "one", "two", "three", "top", "left", "center", "###"]
    for word in single:
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    for record in json.loads((data / "train.json").read_text()):
        for turn in record["conversations"]:
            text = turn["value"].removeprefix("<image>\n")
            ids = tok(text, add_special_tokens=False).input_ids
            assert tok.unk_token_id not in ids and tok.decode(ids) == text


def test_command_line(tmp_path):
    out = tmp_path / "cli"
    args = [sys.executable, str(SCRIPT), "--out", str(out), "--seed", "3", "--stage1-images", "5",
            "--train-images", "3", "--test-images", "2", "--shard-size", "2", "--grounding-images", "2",
            "--grounding-test-images", "1"]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"{out}/shards/shapes-{{000000..000002}}.tar" in result.stdout
    assert len(json.loads((out / "test.json").read_text())) == 4
    assert (out / "tokenizer" / "tokenizer_config.json").exists()
