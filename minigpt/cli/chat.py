"""Chat about an image in the terminal, or answer a file of questions.

    minigpt chat --cfg-path eval_configs/X.yaml [--gpu-id 0] [--image PATH]     interactive chat
    minigpt chat --cfg-path ... --image PATH --prompt "What is in the image?"   one answer
    minigpt chat --cfg-path ... --questions test.json [--json]                  a ShareGPT4V-layout file

In the chat, type a question, or /image PATH (new image, new conversation), /reset, /quit. A MiniGPT-v2
model answers grounding requests ("[refer] the red square") with boxes: they are read back into pixels,
and a copy of the image with the boxes and their labels drawn is saved under --save-dir. Library
warnings go to <save-dir>/chat.log, not between the prompt and the answer.
"""
from __future__ import annotations

import argparse
import json
import logging
import warnings
from pathlib import Path

import torch

from minigpt.cli.options import add_config_arguments, add_model_arguments, image_processor_for, load_from_arguments
from minigpt.cli.plan import add_plan_arguments, print_plan
from minigpt.common.errors import InputError
from minigpt.conversation.boxes import draw_boxes, parse_boxes
from minigpt.inference.chat import Chat, GenerationOptions, adapter_for, generate_answers, load_image
from minigpt.conversation.template import ASSISTANT, USER
from minigpt.datasets.builders.conversation_builders import parse_sharegpt_records
from minigpt.inference.loading import report_peak_memory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, "eval config")
    add_model_arguments(parser)
    parser.add_argument("--image", help="image to talk about")
    parser.add_argument("--prompt", help="ask one question about --image, print the answer and exit")
    parser.add_argument("--questions", help="answer every human turn of a ShareGPT4V-layout JSON file")
    parser.add_argument("--image-root", help="folder the --questions images are relative to "
                                             "(default: images/ beside the file, else its folder)")
    parser.add_argument("--task", help="task identifier for --questions records that name none (e.g. vqa)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print one JSON object per answer")
    parser.add_argument("--max-new-tokens", type=int, default=300)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--repetition-penalty", type=float, default=1.05)
    parser.add_argument("--do-sample", action="store_true", help="sample instead of greedy / beam search")
    parser.add_argument("--adapter", help="task adapter: auto (by the question's task identifier), a name, or none")
    parser.add_argument("--save-dir", default="output/demo", help="where images with an answer's boxes drawn go, "
                                                                 "and chat.log")
    parser.add_argument("--plan", action="store_true", help="print the model's inference plan (minigpt plan) and "
                                                            "exit, before anything is loaded")
    add_plan_arguments(parser)


def log_library_warnings(save_dir: str) -> None:
    """Python warnings and transformers' notes go to <save_dir>/chat.log: the screen shows the chat."""
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(Path(save_dir) / "chat.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    for name in ("py.warnings", "transformers"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False


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


def answer_file(chat: Chat, path: str, image_root: str | None, batch_size: int, as_json: bool,
                task: str | None = None) -> None:
    """Each human turn is answered with the file's own earlier turns as history."""
    root = Path(image_root) if image_root else Path(path).parent / "images"
    if not image_root and not root.is_dir():
        root = Path(path).parent
    jobs = []
    for record in parse_sharegpt_records(path):
        for index, (role, text) in enumerate(record["turns"]):
            if role == USER:
                following = record["turns"][index + 1] if index + 1 < len(record["turns"]) else None
                reference = following[1] if following and following[0] == ASSISTANT else None
                jobs.append((record, index, text, reference))
    images: dict[str, torch.Tensor] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        needed = {record["image"] for record, *_ in chunk}  # a big file's images are not all kept in memory
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
            if as_json:
                adapter = {"adapter": adapter_for(chat.model, sample)} if chat.model.adapters else {}
                print(json.dumps({"id": record["id"], "turn": index // 2, "question": question, "answer": answer,
                                  "reference": reference, **adapter, **boxes_of(answer, sizes[record["image"]])}),
                      flush=True)
            else:
                print(f"[{record['id']}] Q: {question}\nA: {answer}" + (f"\n(reference: {reference})" if reference else ""))


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


def run(args: argparse.Namespace) -> int:
    if args.plan:
        return print_plan(args, training=False)
    if args.prompt and not args.image:
        raise InputError("--prompt needs --image: the image to ask about")
    log_library_warnings(args.save_dir)
    options = args.options + ([f"model.adapter={args.adapter}"] if args.adapter else [])
    config, model = load_from_arguments(args, options)
    device = model.device
    options = GenerationOptions(args.max_new_tokens, args.num_beams, args.temperature, args.top_p,
                                args.repetition_penalty, args.do_sample)
    chat = Chat(model, image_processor_for(config), options)
    if args.questions:
        answer_file(chat, args.questions, args.image_root, args.batch_size, args.json, args.task)
        report_peak_memory(device, "answering")
        return 0
    if args.image:
        chat.set_image(args.image)
    if args.prompt:
        answer = chat.ask(args.prompt)
        report_peak_memory(device, "the answer")
        drawn = save_boxes(chat, answer, args.save_dir)
        if args.json:
            print(json.dumps({"question": args.prompt, "answer": answer, **boxes_of(answer, chat.raw_image.size),
                              **({"drawn": drawn} if drawn else {})}))
        else:
            print(answer + (f"\n(boxes drawn on {drawn})" if drawn else ""))
        return 0
    interactive(chat, args.save_dir, device)
    return 0
