"""Serve a model behind an OpenAI-compatible API: POST /v1/chat/completions, GET /v1/models, GET /health.

    minigpt serve --cfg-path eval_configs/X.yaml [--port 8000] [--api-key KEY] [--options key=value ...]

Any OpenAI client then talks to it (docs/demos-and-serving.md has an example). Images come as data URLs,
http(s) URLs (fetched within --max-image-mb and --image-timeout), or file paths under --image-root. It listens on 127.0.0.1 unless --host says otherwise. With --api-key (or
MINIGPT_API_KEY), requests must carry that key as clients send theirs (Authorization: Bearer KEY).
Requests that arrive together are answered in one generation batch, up to --max-batch (serving/batching.py).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn

from minigpt.cli.options import add_server_arguments, load_from_arguments
from minigpt.serving.openai_api import ServedModel, create_app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser, port=8000)
    parser.add_argument("--name", help="the model name the API reports (default: the config file's name)")
    parser.add_argument("--image-root", default=".", help="image paths in requests must lie under this folder")
    parser.add_argument("--api-key", default=os.environ.get("MINIGPT_API_KEY"),
                        help="the key clients must send (default: $MINIGPT_API_KEY; none: no key needed)")
    parser.add_argument("--max-batch", type=int, default=8, help="requests answered together at most (1: one at a time)")
    parser.add_argument("--max-images", type=int, default=4, help="images one conversation may hold")
    parser.add_argument("--image-timeout", type=float, default=10.0,
                        help="seconds an image named by an http(s) URL may take to fetch, in all")


def run(args: argparse.Namespace) -> int:
    loaded = load_from_arguments(args)
    served = ServedModel(args.name or Path(args.cfg_path).stem, loaded.model, loaded.image_processor,
                         Path(args.image_root), int(args.max_image_mb * 2**20), args.max_batch, args.image_timeout,
                         args.max_images)
    uvicorn.run(create_app(served, args.api_key), host=args.host, port=args.port, log_level="warning")
    return 0
