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
from minigpt.cli.options import add_model_arguments, add_toolbox_arguments, toolbox_model_from
from minigpt.common.errors import InputError
from minigpt.serving.mcp_server import add_server_tools, serve_stdio
from minigpt.paragraph.tool import write_paragraph_tool


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_toolbox_arguments(parser)
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
            loader, memory_mb = toolbox_model_from(args)
            toolbox, _ = build_toolbox(folder, args.load, loader, args.user_tools, args.timeout, memory_mb,
                                       product_tools=[write_paragraph_tool()])
            for line in add_server_tools(toolbox):
                print(line)
        except (AgentConfigError, TemplateError) as error:
            raise InputError(str(error)) from None
        print(f"minigpt mcp: serving {len(toolbox.tools)} tools on stdio; images and steps.jsonl in {folder}")
    serve_stdio(toolbox)
    return 0
