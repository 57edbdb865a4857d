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
import logging
import warnings
from pathlib import Path

from minigpt.cli.options import add_config_arguments, add_model_arguments, load_from_arguments
from minigpt.cli.plan import add_plan_arguments, print_plan
from minigpt.common.errors import InputError
from minigpt.inference.chat import Chat, GenerationOptions
from minigpt.inference.memory import report_peak_memory
from minigpt.serving.terminal_chat import answer_once, interactive, print_file_answers


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


def run(args: argparse.Namespace) -> int:
    if args.plan:
        return print_plan(args, training=False)
    if args.prompt and not args.image:
        raise InputError("--prompt needs --image: the image to ask about")
    log_library_warnings(args.save_dir)
    options = args.options + ([f"model.adapter={args.adapter}"] if args.adapter else [])
    loaded = load_from_arguments(args, options)
    device = loaded.model.device
    options = GenerationOptions(args.max_new_tokens, args.num_beams, args.temperature, args.top_p,
                                args.repetition_penalty, args.do_sample)
    chat = Chat(loaded.model, loaded.image_processor, options)
    if args.questions:
        print_file_answers(chat, args.questions, args.image_root, args.batch_size, args.task, args.json)
        report_peak_memory(device, "answering")
    elif args.prompt:
        chat.set_image(args.image)
        answer_once(chat, args.prompt, args.save_dir, args.json)
        report_peak_memory(device, "the answer")
    else:
        if args.image:
            chat.set_image(args.image)
        interactive(chat, args.save_dir, device)
    return 0
