"""Offer the agent's tools and templates to MCP clients (Claude Desktop, editors) over stdio.

    minigpt mcp
    minigpt mcp --cfg-path minigptv2_eval --load caption_cuda:0

The client starts this command itself and speaks MCP on its stdin and stdout, so the command's own lines go to
stderr. Model tools (caption, vqa, refer, ...) and the templates that use them need --cfg-path, as in
`minigpt agent`; without it the classical tools and their templates are offered. The session's images and
steps.jsonl go to --out (a new folder under output/mcp by default: give an absolute path when the client starts
the command in a folder you cannot write to).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from datetime import datetime
from pathlib import Path

from minigpt.agents.loading import AgentConfigError, build_toolbox
from minigpt.agents.templates import TemplateError
from minigpt.cli.agent import estimated_model_mb, model_loader
from minigpt.cli.options import add_model_arguments
from minigpt.common.errors import InputError
from minigpt.serving.mcp_server import add_server_tools, serve_stdio
from minigpt.paragraph.tool import write_paragraph_tool


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cfg-path", help="a chat config for the model tools (without it, classical tools only)")
    parser.add_argument("--options", nargs="+", default=[], help="config overrides: key=value")
    parser.add_argument("--load", default="",
                        help='tools to load up front, NAME_DEVICE each: "face_detect_cpu,caption_cuda:0"')
    parser.add_argument("--user-tools", action="append", default=[], metavar="MODULE:FACTORY",
                        help="a Python import path whose factory returns your own Tool(s)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds each tool or template call may take")
    parser.add_argument("--out", help="the session's folder for images and steps.jsonl (default: output/mcp/<time>)")
    add_model_arguments(parser)


def run(args: argparse.Namespace) -> int:
    folder = Path(args.out or f"output/mcp/{datetime.now():%Y%m%d-%H%M%S}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"--out {folder}: cannot create the folder ({error})") from None
    # stdout carries the MCP messages: what loading prints (memory report, a model loaded up front) goes to stderr
    with contextlib.redirect_stdout(sys.stderr):
        try:
            memory_mb = estimated_model_mb(args) if args.cfg_path else 0
            toolbox, _ = build_toolbox(folder, args.load, model_loader(args), args.user_tools, args.timeout,
                                       memory_mb, product_tools=[write_paragraph_tool()])
            for line in add_server_tools(toolbox):
                print(line)
        except (AgentConfigError, TemplateError) as error:
            raise InputError(str(error)) from None
        print(f"minigpt mcp: serving {len(toolbox.tools)} tools on stdio; images and steps.jsonl in {folder}")
    serve_stdio(toolbox)
    return 0
