"""Small examples of every annotation layout the builders read, made from synthetic-shapes scenes.

    python dataset/example_formats.py --out data/formats --images 20

Each layout gets its files as the builders read them: as the data set is released, except VQAv2 /
OK-VQA and COCO captions, which are in the one-file layouts LAVIS distributes (see dataset/README.md).
It doubles as a reference for preparing real data; the tests and the data-loading benchmark build every
builder from it. `write_examples` returns, per data set name, the config section that trains on its files.
"""
from __future__ import annotations

import argparse
import json
import pickle
import random
import shutil
from pathlib import Path

from PIL import Image

from minigpt.synthetic.shapes import COLORS, SHAPES, ask, caption, draw, jpeg, make_scene, write_shards

IMAGE_SIZE = 64
FACE_SECTIONS = ("Gender", "Posture", "Feature by Feature Description")


def _image_name(index: int) -> str:
    return f"img_{index:06d}.jpg"


def _dump(path: Path, data) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return str(path)


def _expression(shape: dict) -> str:
    return f"the {shape['color']} {shape['shape']}"


def write_examples(out: str | Path, images: int = 20, seed: int = 0, shards: int = 2) -> dict[str, dict]:
    """Write every layout under `out`; -> {dataset name: config section (builder, build_info, ...)}."""
    out = Path(out)
    rng = random.Random(seed)
    scenes = [make_scene(rng, IMAGE_SIZE) for _ in range(images)]
    image_dir = out / "images"
    align_dir = out / "cc_sbu_align" / "image"
    for folder in (image_dir, align_dir):
        folder.mkdir(parents=True, exist_ok=True)
    for index, shapes in enumerate(scenes):
        (image_dir / _image_name(index)).write_bytes(jpeg(draw(shapes, IMAGE_SIZE)))
        shutil.copy(image_dir / _image_name(index), align_dir / f"{index}.jpg")

    def qa(index: int, kind: str) -> tuple[str, str]:
        found = None
        while found is None:
            found = ask(rng, kind, scenes[index])
        return found[0], found[1]

    # (in this order: each draws from rng, and the files stay the same for a seed)
    sections = _stage1_formats(out, scenes, rng, shards)
    sections.update(_conversation_formats(out, scenes, image_dir, qa))
    sections.update(_caption_formats(out, scenes, image_dir))
    sections.update(_refcoco_format(out, scenes))
    sections.update(_vqa_formats(out, scenes, image_dir, qa))
    sections.update(_benchmark_formats(out, scenes, rng, image_dir, qa))
    return sections


def _stage1_formats(out: Path, scenes: list, rng: random.Random, shards: int) -> dict[str, dict]:
    """LAION / CC shards, and MiniGPT-4's cc_sbu_align folder."""
    pattern, _ = write_shards(out / "laion", rng, len(scenes), max(1, len(scenes) // shards), IMAGE_SIZE)
    captions = [{"image_id": str(i), "caption": caption(s)} for i, s in enumerate(scenes)]
    align = _dump(out / "cc_sbu_align" / "filter_cap.json", {"annotations": captions})[:-len("filter_cap.json")]
    return {"laion": {"build_info": {"storage": pattern}, "shuffle_buffer": 8},
            "cc_sbu_align": {"build_info": {"storage": align}}}


def _conversation_formats(out: Path, scenes: list, image_dir: Path, qa) -> dict[str, dict]:
    """ShareGPT4V (with a text-only record), LLaVA detail descriptions and sectioned face annotations."""
    conversations = []
    for index in range(len(scenes)):
        (q1, a1), (q2, a2) = qa(index, "colors"), qa(index, "count")
        conversations.append({"id": f"sg-{index}", "image": _image_name(index), "conversations": [
            {"from": "human", "value": f"<image>\n{q1}"}, {"from": "gpt", "value": a1},
            {"from": "human", "value": q2}, {"from": "gpt", "value": a2}]})
    conversations.append({"id": "text-only-0", "conversations": [
        {"from": "human", "value": "Name a colour."}, {"from": "gpt", "value": "red"}]})
    detail = [{"id": f"ll-{i}", "image": _image_name(i), "conversations": [
        {"from": "human", "value": "Describe this image in detail.\n<image>"}, {"from": "gpt", "value": caption(s)}]}
        for i, s in enumerate(scenes)]
    faces = []
    for index in range(len(scenes)):
        for number, section in enumerate(FACE_SECTIONS):
            question, answer = qa(index, ("color", "position", "caption")[number])
            record = {"id": f"face-{index}-{number}", "image": _image_name(index), "section": section, "answer": answer}
            if number != 2:  # the last section brings no question: its YAML instructions are asked
                record["question"] = question
            faces.append(record)
    images = str(image_dir)
    return {"sharegpt4v": {"build_info": {"ann_path": _dump(out / "sharegpt4v.json", conversations), "image_path": images}},
            "llava_detail": {"build_info": {"ann_path": _dump(out / "llava_detail.json", detail), "image_path": images}},
            "face_annotations": {"build_info": {"ann_path": _dump(out / "face_annotations.json", faces),
                                                "image_path": images}}}


def _caption_formats(out: Path, scenes: list, image_dir: Path) -> dict[str, dict]:
    """COCO captions (Karpathy split, as LAVIS distributes it) and TextCaps."""
    karpathy = [{"image": f"train2014/{_image_name(i)}", "caption": caption(s), "image_id": i} for i, s in enumerate(scenes)]
    karpathy.append({"image": "val2014/restval.jpg", "caption": "a val2014 image", "image_id": -1})  # dropped by default
    (out / "coco").mkdir(exist_ok=True)
    if not (out / "coco" / "train2014").exists():
        (out / "coco" / "train2014").symlink_to(image_dir.resolve(), target_is_directory=True)
    textcaps = {"data": [{"image_id": f"img_{i:06d}", "caption_id": i, "caption_str": caption(s)} for i, s in enumerate(scenes)]}
    return {"coco_caption": {"build_info": {"ann_path": _dump(out / "coco_karpathy_train.json", karpathy),
                                            "image_path": str(out / "coco")}},
            "textcaps": {"build_info": {"ann_path": _dump(out / "TextCaps_0.1_train.json", textcaps),
                                        "image_path": str(image_dir)}}}


def _refcoco_format(out: Path, scenes: list) -> dict[str, dict]:
    """RefCOCO: images padded to 96 x 64 (boxes are scaled by width and height separately), ref ids unlike
    annotation ids, as in the real files."""
    refs, annotations = [], []
    refer_images = out / "refcoco_images"
    refer_images.mkdir(exist_ok=True)
    for index, shapes in enumerate(scenes):
        padded = Image.new("RGB", (IMAGE_SIZE * 3 // 2, IMAGE_SIZE), "white")
        padded.paste(draw(shapes, IMAGE_SIZE), (0, 0))
        (refer_images / f"COCO_train2014_{index:012d}.jpg").write_bytes(jpeg(padded))
        for number, shape in enumerate(shapes):
            ann_id = index * 10 + number
            x1, y1, x2, y2 = shape["bbox"]
            annotations.append({"id": ann_id, "image_id": index, "bbox": [x1, y1, x2 - x1, y2 - y1], "category_id": 1})
            refs.append({"ref_id": 5000 + ann_id, "ann_id": ann_id, "image_id": index, "split": "train",
                         "category_id": 1, "sentences": [{"sent": _expression(shape)},
                                                         {"sent": f"{shape['color']} {shape['shape']}"}]})
    refer_dir = out / "refcoco_annotations" / "refcoco"
    _dump(refer_dir / "instances.json", {"images": [{"id": i, "width": IMAGE_SIZE * 3 // 2, "height": IMAGE_SIZE,
                                                     "file_name": f"COCO_train2014_{i:012d}.jpg"} for i in range(len(scenes))],
                                         "annotations": annotations})
    (refer_dir / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    return {"refcoco": {"build_info": {"ann_path": str(refer_dir.parent), "image_path": str(refer_images)}}}


def _vqa_formats(out: Path, scenes: list, image_dir: Path, qa) -> dict[str, dict]:
    """OK-VQA (LAVIS's one-file layout), A-OKVQA, GQA and OCR-VQA."""
    okvqa, aokvqa, gqa, ocrvqa = [], [], {}, {}
    coco2017 = out / "coco2017"
    coco2017.mkdir(exist_ok=True)
    for index in range(len(scenes)):
        question, answer = qa(index, "color")
        okvqa.append({"question_id": index, "image": _image_name(index), "question": question,
                      "answer": [answer] * 8 + ["not sure"] * 2})
        aokvqa.append({"question_id": f"a{index}", "image_id": 1000 + index, "question": question,
                       "direct_answers": [answer] * 9 + ["dark " + answer], "choices": [answer, "black"], "correct_choice_idx": 0})
        shutil.copy(image_dir / _image_name(index), coco2017 / f"{1000 + index:012d}.jpg")
        gqa[f"g{index}"] = {"imageId": f"img_{index:06d}", "question": question, "answer": answer, "fullAnswer": answer}
        count_q, count_a = qa(index, "count")
        ocrvqa[f"img_{index:06d}"] = {"imageURL": f"http://example.com/img_{index:06d}.jpg", "split": 1,
                                      "questions": [question, count_q], "answers": [answer, count_a]}
    images = str(image_dir)
    return {"ok_vqa": {"build_info": {"ann_path": _dump(out / "okvqa_train.json", okvqa), "image_path": images}},
            "aok_vqa": {"build_info": {"ann_path": _dump(out / "aokvqa_v1p0_train.json", aokvqa), "image_path": str(coco2017)}},
            "gqa": {"build_info": {"ann_path": _dump(out / "train_balanced_questions.json", gqa), "image_path": images}},
            "ocrvqa": {"build_info": {"ann_path": _dump(out / "ocrvqa.json", ocrvqa), "image_path": images}}}


def _dump_lines(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


def _benchmark_formats(out: Path, scenes: list, rng: random.Random, image_dir: Path, qa) -> dict[str, dict]:
    """VizWiz, VSR, Hateful Memes and IconQA, in their released layouts."""
    vizwiz, vsr, memes, problems = [], [], [], {}
    (out / "hateful_memes" / "img").mkdir(parents=True, exist_ok=True)
    for index, shapes in enumerate(scenes):
        question, answer = qa(index, "color")
        if index % 4 == 3:  # as in VizWiz, some questions cannot be answered from the picture
            question, answer = "What is written on the label?", "unanswerable"
        vizwiz.append({"image": _image_name(index), "question": question, "answerable": int(answer != "unanswerable"),
                       "answers": [{"answer": answer, "answer_confidence": "yes"}] * 9 + [{"answer": "unsure", "answer_confidence": "no"}]})
        colour, shape = rng.choice(list(COLORS)), rng.choice(SHAPES)
        present = any(s["color"] == colour and s["shape"] == shape for s in shapes)
        vsr.append({"image": _image_name(index), "caption": f"There is a {colour} {shape}.", "label": int(present)})
        meme = f"{index:05d}.png"
        Image.open(image_dir / _image_name(index)).save(out / "hateful_memes" / "img" / meme)
        memes.append({"id": 10000 + index, "img": f"img/{meme}", "label": int(any(s["color"] == "red" for s in shapes)),
                      "text": caption(shapes)})
        question, answer = qa(index, "count")
        problem = out / "iconqa" / f"{index}"
        problem.mkdir(parents=True, exist_ok=True)
        Image.open(image_dir / _image_name(index)).save(problem / "image.png")
        choices = sorted({answer, *rng.sample(["one", "two", "three"], 2)})
        problems[str(index)] = {"question": question, "choices": choices, "answer": choices.index(answer),
                                "ques_type": "choose_txt", "split": "train", "grade": "prek"}
    problems["999"] = {"question": "Which tile fits?", "choices": [], "answer": 0, "ques_type": "choose_img", "split": "train"}
    return {
        "vizwiz": {"build_info": {"ann_path": _dump(out / "vizwiz_train.json", vizwiz), "image_path": str(image_dir)}},
        "vsr": {"build_info": {"ann_path": _dump_lines(out / "vsr_train.jsonl", vsr), "image_path": str(image_dir)}},
        "hateful_memes": {"build_info": {"ann_path": _dump_lines(out / "hateful_memes" / "train.jsonl", memes),
                                         "image_path": str(out / "hateful_memes")}},
        "iconqa": {"build_info": {"ann_path": _dump(out / "iconqa_problems.json", problems),
                                  "image_path": str(out / "iconqa")}, "split": "train"},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sections = write_examples(args.out, args.images, args.seed)
    print(json.dumps({"datasets": sections}, indent=1))


if __name__ == "__main__":
    main()
