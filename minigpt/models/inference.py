"""Load a model for inference from an eval config: build, load `ckpt`, optionally quantise to 8 or 4 bits."""
from __future__ import annotations

import argparse
import resource
import sys

import torch
from omegaconf import DictConfig

from minigpt.common import registry
from minigpt.common.checkpoint import load_weights
from minigpt.datasets.builders.base import build_processor
from minigpt.models.llm import quantize_linear_layers
from minigpt.processors.image import Blip2ImageProcessor


def pick_device(gpu_id: int | None) -> torch.device:
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device("cuda", gpu_id)
    return torch.device("cpu")


def load_for_inference(config: DictConfig, device: torch.device, low_resource: bool | None = None,
                       bits: int | None = None, half_dtype: torch.dtype = torch.float16):
    """-> model in eval mode. With low_resource, the LLM's linear layers run in int8 or NF4 (bitsandbytes,
    `model.low_resource_bits` unless `bits` is given). On a GPU the frozen parts run in `half_dtype`.

    An LLM from a folder is quantised as it loads; one built from config gets its weights from `ckpt`
    first and is quantised after, so both paths end with the same quantised layers.
    """
    model_cfg = config.model.copy()
    if low_resource is not None:
        model_cfg.low_resource = low_resource
    if bits is not None:
        model_cfg.low_resource_bits = bits
    if device.type == "cuda":
        model_cfg.device_8bit = device.index or 0
    compute_dtype = half_dtype if device.type == "cuda" else torch.float32
    model = registry.get("model", model_cfg.arch).from_config(model_cfg, device, compute_dtype)
    if model_cfg.ckpt:
        load_weights(model, model_cfg.ckpt)
    if model_cfg.low_resource and not model_cfg.llama_model:
        quantize_linear_layers(model.llama_model, model_cfg.low_resource_bits, compute_dtype)
    model.eval()
    return model


def peak_memory_gib(device: torch.device) -> float:
    """Peak memory so far: torch's GPU allocations, or on the CPU the process's peak resident set, which
    counts the Python runtime and libraries as well."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB


def report_peak_memory(device: torch.device, when: str) -> None:
    kind = "GPU" if device.type == "cuda" else "resident"
    print(f"peak {kind} memory {peak_memory_gib(device):.2f} GiB after {when}", file=sys.stderr)


def image_processor_for(config: DictConfig):
    """The eval image transform: the first data set's `vis_processor.eval` (or `.train`, as MiniGPT-4's
    eval configs write it), else a plain resize to the model's image size."""
    for dataset in config.datasets.values():
        processor = build_processor(dataset.vis_processor, "eval")
        if processor is not None:
            return processor
    return Blip2ImageProcessor(image_size=config.model.image_size)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every entry point that serves a model shares (demo_web.py, serve.py)."""
    parser.add_argument("--cfg-path", required=True, help="eval config YAML")
    parser.add_argument("--options", nargs="+", default=[], help="config overrides: key=value")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--max-image-mb", type=float, default=20, help="largest image accepted")
    parser.add_argument("--gpu-id", type=int, default=0)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is visible")
    parser.add_argument("--low-resource", action="store_true", default=None, help="LLM in 8-bit (or --bits 4)")
    parser.add_argument("--bits", type=int, choices=(8, 4))


def load_from_arguments(args: argparse.Namespace) -> tuple[DictConfig, torch.nn.Module]:
    """-> (config, model) as add_model_arguments' options say; random parts seeded from run.seed, as in eval.py."""
    from minigpt.common.config import load_config  # the config module imports the registry, which imports models

    config = load_config(args.cfg_path, args.options, for_training=False)
    device = torch.device("cpu") if args.cpu else pick_device(args.gpu_id)
    torch.manual_seed(config.run.seed)
    model = load_for_inference(config, device, low_resource=args.low_resource, bits=args.bits)
    report_peak_memory(device, "loading")
    return config, model
