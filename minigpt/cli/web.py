"""Chat about an image in the browser (Gradio), over the same chat engine as `minigpt chat`.

    minigpt web --cfg-path eval_configs/X.yaml [--port 7860] [--share] [--options key=value ...]

Each browser tab has its own conversation; the Tools tab runs a template or one tool on an image and
shows each step's image (docs/agents.md). It listens on 127.0.0.1 unless --host says otherwise;
--share asks Gradio for a public link. Needs the `web` extra (gradio).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from minigpt.agents.classical import classical_tools
from minigpt.cli.options import add_server_arguments, load_from_arguments
from minigpt.serving.web_agent import AgentTab
from minigpt.serving.web_demo import WebChat, build_ui, check_gradio


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser, port=7860)
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public share link")
    parser.add_argument("--tool-out", default="output/web_tools", help="where the Tools tab keeps each run's images")


def run(args: argparse.Namespace) -> int:
    check_gradio()  # the extras, before the model loads
    classical = classical_tools()
    loaded = load_from_arguments(args)
    tools = AgentTab.for_model(loaded.model, loaded.image_processor, classical, args.tool_out)
    ui = build_ui(WebChat(loaded.model, loaded.image_processor, args.max_image_mb), f"MiniGPT: {Path(args.cfg_path).stem}",
                  tools)
    ui.queue(default_concurrency_limit=1)  # one answer at a time per model; other tabs wait their turn
    ui.launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0
