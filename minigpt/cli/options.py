"""Options that several subcommands share, and the model they name."""
from __future__ import annotations

import argparse
from typing import Callable

import torch

from minigpt.config.loader import load_config
from minigpt.inference.loading import LoadedModel, Placement, load_model, model_loader, pick_device
from minigpt.inference.memory import estimated_model_mb, report_peak_memory


def add_config_arguments(parser: argparse.ArgumentParser, what: str = "config") -> None:
    parser.add_argument("--cfg-path", required=True, help=f"{what}: a YAML file, or the name of a shipped config "
                                                          "(`minigpt configs` lists them)")
    parser.add_argument("--options", nargs="+", default=[], help="config overrides: key=value (e.g. run.init_lr=1e-5)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Where and in what precision a model for inference runs."""
    parser.add_argument("--gpu-id", type=int, default=0, help="GPU to use (the CPU when none is visible)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is visible")
    parser.add_argument("--low-resource", action="store_true", default=None,
                        help="LLM quantised by bitsandbytes (see --bits), vision side in half precision on a GPU")
    parser.add_argument("--bits", type=int, choices=(8, 4), help="with --low-resource: 8 (LLM.int8) or 4 (NF4); "
                                                                  "default model.low_resource_bits")
    parser.add_argument("--device-map", choices=("auto", "sequential"),
                        help="split the LLM across the visible GPUs (accelerate): auto balances its layers, "
                             "sequential fills the first GPU first; the vision side stays on --gpu-id")
    parser.add_argument("--max-gpu-memory", help="with --device-map: most each GPU may hold, e.g. 20GiB")


def add_toolbox_arguments(parser: argparse.ArgumentParser) -> None:
    """The toolbox that `minigpt agent` runs and `minigpt mcp` offers, declared once so that both take the
    same model, tools and limits."""
    parser.add_argument("--cfg-path", help="a chat config for the model tools (without it, classical tools only)")
    parser.add_argument("--options", nargs="+", default=[], help="config overrides: key=value")
    parser.add_argument("--load", default="",
                        help='tools to load up front, NAME_DEVICE each: "face_detect_cpu,caption_cuda:0"')
    parser.add_argument("--user-tools", action="append", default=[], metavar="MODULE:FACTORY",
                        help="a Python import path whose factory returns your own Tool(s)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds each tool or template call may take")


def add_server_arguments(parser: argparse.ArgumentParser, port: int) -> None:
    """A model served over the network: its config, where it runs, and where it listens."""
    add_config_arguments(parser, "eval config")
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--max-image-mb", type=float, default=20, help="largest image accepted")


def placement_from(args: argparse.Namespace) -> Placement:
    """Where --gpu-id / --cpu, --low-resource, --bits and --device-map put the model."""
    device = torch.device("cpu") if args.cpu else pick_device(args.gpu_id)
    return Placement(device, args.low_resource, args.bits, args.device_map, args.max_gpu_memory)


def load_from_arguments(args: argparse.Namespace, options: list[str] | None = None) -> LoadedModel:
    """The model that --cfg-path, --options and the model options name, loaded for inference."""
    config = load_config(args.cfg_path, options if options is not None else args.options, for_training=False)
    placement = placement_from(args)
    loaded = load_model(config, placement)
    report_peak_memory(placement.device, "loading")
    return loaded


def toolbox_model_from(args: argparse.Namespace) -> tuple[Callable[[str], tuple] | None, int]:
    """The agent's model tools' loader for --cfg-path (loading when a tool first needs it) and its rough
    size in MB; (None, 0) without --cfg-path: classical tools only."""
    if not args.cfg_path:
        return None, 0
    config = load_config(args.cfg_path, args.options, for_training=False)
    return model_loader(config, placement_from(args)), estimated_model_mb(config.model, args.low_resource, args.bits)
