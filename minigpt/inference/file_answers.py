"""Answer every human turn of a ShareGPT4V-layout file, in batches, each with the file's own earlier turns
as its history: `minigpt chat --questions` and anything else that answers a file of questions."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from minigpt.conversation.template import ASSISTANT, USER
from minigpt.datasets.builders.conversation_builders import parse_sharegpt_records
from minigpt.inference.chat import Chat, adapter_for, generate_answers, load_image


@dataclass
class FileAnswer:
    record_id: str
    turn: int  # which question of its record (0: the first)
    question: str
    answer: str
    reference: str | None  # the file's own answer to the question, if it has one
    adapter: str | None  # the task adapter that answered (None: the model has none)
    image_size: tuple[int, int]  # (width, height) of the original image, to read boxes back into pixels


def image_folder(path: str, image_root: str | None) -> Path:
    """Where a file's images are: `image_root`, else images/ beside the file, else the file's folder."""
    if image_root:
        return Path(image_root)
    beside = Path(path).parent / "images"
    return beside if beside.is_dir() else Path(path).parent


def questions_of(path: str) -> list[tuple[dict, int, str, str | None]]:
    """(record, turn index, question, reference answer) for each human turn of the file."""
    jobs = []
    for record in parse_sharegpt_records(path):
        turns = record["turns"]
        for index, (role, text) in enumerate(turns):
            if role == USER:
                following = turns[index + 1] if index + 1 < len(turns) else None
                reference = following[1] if following and following[0] == ASSISTANT else None
                jobs.append((record, index, text, reference))
    return jobs


def answer_file(chat: Chat, path: str, image_root: str | None = None, batch_size: int = 8,
                task: str | None = None) -> Iterator[FileAnswer]:
    """Each human turn's answer, in the file's order, a batch at a time; a record without a task identifier
    gets `task`. Only the images of the batch at hand are kept in memory."""
    root = image_folder(path, image_root)
    jobs = questions_of(path)
    images: dict[str, torch.Tensor] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        needed = {record["image"] for record, *_ in chunk}
        images = {name: tensor for name, tensor in images.items() if name in needed}
        samples = []
        for record, index, question, _ in chunk:
            if record["image"] not in images:
                picture = load_image(root / record["image"])
                images[record["image"]], sizes[record["image"]] = chat.image_processor(picture), picture.size
            samples.append({"id": record["id"], "image": images[record["image"]], "task": record["task"] or task,
                            "turns": record["turns"][:index] + [(USER, question)]})
        answers = generate_answers(chat.model, chat.collator, samples, chat.options)
        for (record, index, question, reference), answer, sample in zip(chunk, answers, samples):
            adapter = adapter_for(chat.model, sample) if chat.model.adapters else None
            yield FileAnswer(record["id"], index // 2, question, answer, reference, adapter, sizes[record["image"]])
