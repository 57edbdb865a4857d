"""Options that several subcommands share, and what they load: the config, the model, the image transform."""
from __future__ import annotations

import argparse

import torch
from omegaconf import DictConfig

from minigpt.config.loader import load_config
from minigpt.datasets.builders.base import inference_image_processor
from minigpt.models.image_tokens import input_image_size
from minigpt.inference.loading import load_for_inference, pick_device, report_peak_memory
from minigpt.models.minigpt import MiniGPT


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


def add_server_arguments(parser: argparse.ArgumentParser, port: int) -> None:
    """A model served over the network: its config, where it runs, and where it listens."""
    add_config_arguments(parser, "eval config")
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--max-image-mb", type=float, default=20, help="largest image accepted")


def load_from_arguments(args: argparse.Namespace, options: list[str] | None = None) -> tuple[DictConfig, MiniGPT]:
    """-> (config, model) as the config and model options say; parts without weights files get random
    weights seeded from run.seed, the same in every subcommand."""
    config = load_config(args.cfg_path, options if options is not None else args.options, for_training=False)
    device = torch.device("cpu") if args.cpu else pick_device(args.gpu_id)
    torch.manual_seed(config.run.seed)
    model = load_for_inference(config, device, low_resource=args.low_resource, bits=args.bits,
                               device_map=args.device_map, max_gpu_memory=args.max_gpu_memory)
    report_peak_memory(device, "loading")
    return config, model


def image_processor_for(config: DictConfig):
    """The image transform for chatting with the config's model."""
    return inference_image_processor(config.datasets.values(), input_image_size(config.model))
