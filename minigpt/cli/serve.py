"""Serve a model behind an OpenAI-compatible API: POST /v1/chat/completions, GET /v1/models.

    minigpt serve --cfg-path eval_configs/X.yaml [--port 8000] [--options key=value ...]

Any OpenAI client then talks to it (docs/demos-and-serving.md has an example). Images come as data URLs, or as
file paths under --image-root. It listens on 127.0.0.1 unless --host says otherwise; there is no
authentication, so expose it only behind something that has.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn

from minigpt.cli.options import add_server_arguments, image_processor_for, load_from_arguments
from minigpt.serving.openai_api import ServedModel, create_app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser, port=8000)
    parser.add_argument("--name", help="the model name the API reports (default: the config file's name)")
    parser.add_argument("--image-root", default=".", help="image paths in requests must lie under this folder")


def run(args: argparse.Namespace) -> int:
    config, model = load_from_arguments(args)
    served = ServedModel(args.name or Path(args.cfg_path).stem, model, image_processor_for(config),
                         Path(args.image_root), int(args.max_image_mb * 2**20))
    uvicorn.run(create_app(served), host=args.host, port=args.port, log_level="warning")
    return 0
