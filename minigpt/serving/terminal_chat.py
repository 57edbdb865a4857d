"""Chat in the terminal: one answer, a file of questions, or a conversation typed line by line, with the
boxes a MiniGPT-v2 answer names read back into pixels and drawn on a copy of the image."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from minigpt.conversation.boxes import draw_boxes, parse_boxes
from minigpt.inference.chat import Chat
from minigpt.inference.file_answers import answer_file
from minigpt.inference.memory import report_peak_memory


def boxes_of(answer: str, size: tuple[int, int]) -> dict:
    """The boxes an answer names, in pixels of the original image, and anything unreadable."""
    parsed = parse_boxes(answer, *size)
    found = {"boxes": [{"label": b.label, "box": [round(v, 1) for v in b.box]} for b in parsed.boxes]} if parsed.boxes else {}
    return {**found, **({"box_problems": parsed.problems} if parsed.problems else {})}


def save_boxes(chat: Chat, answer: str, save_dir: str) -> str | None:
    """Draw the answer's boxes on a copy of the chat's image; -> the saved path, or None without boxes."""
    parsed = parse_boxes(answer, *chat.raw_image.size)
    for problem in parsed.problems:
        print(f"(could not read a box: {problem})")
    if not parsed.boxes:
        return None
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    path = Path(save_dir) / f"boxes_{len(list(Path(save_dir).glob('boxes_*.jpg'))):04d}.jpg"
    draw_boxes(chat.raw_image, parsed.boxes).save(path)
    return str(path)


def print_file_answers(chat: Chat, path: str, image_root: str | None, batch_size: int, task: str | None,
                       as_json: bool) -> None:
    """Every human turn of a ShareGPT4V-layout file answered, one line (JSON) or block (text) each."""
    for answered in answer_file(chat, path, image_root, batch_size, task):
        if as_json:
            adapter = {"adapter": answered.adapter} if chat.model.adapters else {}
            print(json.dumps({"id": answered.record_id, "turn": answered.turn, "question": answered.question,
                              "answer": answered.answer, "reference": answered.reference, **adapter,
                              **boxes_of(answered.answer, answered.image_size)}), flush=True)
        else:
            reference = f"\n(reference: {answered.reference})" if answered.reference else ""
            print(f"[{answered.record_id}] Q: {answered.question}\nA: {answered.answer}{reference}")


def interactive(chat: Chat, save_dir: str, device: torch.device) -> None:
    adapters = chat.model.adapters
    answered = False
    print("Ask about the image. Commands: /image PATH, /reset, /quit"
          + (", /adapters, /adapter NAME|auto|none" if adapters else ""))
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            return
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return
        if line == "/reset":
            chat.reset()
            print("(conversation cleared)")
        elif adapters and line == "/adapters":
            print(f"(adapters: {adapters.describe()}; selection: {adapters.selection})")
        elif adapters and line.startswith("/adapter"):
            choice = line.removeprefix("/adapter").strip()
            if choice in ("auto", "none", *adapters.names):
                adapters.selection = choice
                print(f"(adapter selection: {choice})")
            else:
                print(f"(unknown adapter '{choice}'; known: {', '.join(adapters.names)}, auto, none)")
        elif line.startswith("/image"):
            try:
                chat.set_image(line.split(maxsplit=1)[1])
                print("(new image loaded)")
            except (IndexError, ValueError) as error:
                print(f"(could not load image: {error})")
        elif chat.image is None:
            print("(load an image first: /image PATH)")
        else:
            try:
                answer = chat.ask(line)
            except ValueError as error:
                print(f"({error})")
                continue
            if not answered:
                report_peak_memory(device, "the first answer")
                answered = True
            via = f"[{adapters.active}]" if adapters and adapters.active else ""
            print(f"minigpt{via}> {answer}")
            drawn = save_boxes(chat, answer, save_dir)
            if drawn:
                print(f"(boxes drawn on {drawn})")


def answer_once(chat: Chat, question: str, save_dir: str, as_json: bool) -> None:
    """One answer about the chat's image, printed, with its boxes drawn under `save_dir`."""
    answer = chat.ask(question)
    drawn = save_boxes(chat, answer, save_dir)
    if as_json:
        print(json.dumps({"question": question, "answer": answer, **boxes_of(answer, chat.raw_image.size),
                          **({"drawn": drawn} if drawn else {})}))
    else:
        print(answer + (f"\n(boxes drawn on {drawn})" if drawn else ""))
