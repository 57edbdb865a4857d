"""Load a model for inference from a config: the one way chat, web, serve, eval, the agents, paragraph,
export and the benchmarks get a model. Build it, load `ckpt`, optionally quantise to 8 or 4 bits or split
the LLM across GPUs, and pair it with the image transform its configs describe."""
from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, replace
from typing import Callable

import torch
from omegaconf import DictConfig

from minigpt.common import registry
from minigpt.common.errors import InputError, MissingExtraError
from minigpt.datasets.builders.base import inference_image_processor
from minigpt.inference.memory import report_peak_memory
from minigpt.models.image_tokens import input_image_size
from minigpt.models.llm import quantize_linear_layers
from minigpt.models.minigpt import MiniGPT
from minigpt.models.vision_towers import tower_shape
from minigpt.models.weights import load_weights


@dataclass(frozen=True)
class Placement:
    """Where a model for inference runs and in what precision (the chat, web, serve and agent options).
    `low_resource` and `bits` left None take the config's `model.low_resource` and `low_resource_bits`."""

    device: torch.device = torch.device("cpu")
    low_resource: bool | None = None
    bits: int | None = None
    device_map: str | None = None  # auto | sequential: the LLM split across the visible GPUs
    max_gpu_memory: str | None = None
    half_dtype: torch.dtype = torch.float16  # the frozen parts' precision on a GPU

    def on(self, device: str | torch.device) -> "Placement":
        return replace(self, device=torch.device(device))


@dataclass
class LoadedModel:
    """A model ready to answer, with the config it came from and the transform its images need."""

    config: DictConfig
    model: MiniGPT
    image_processor: Callable


def load_model(config: DictConfig, placement: Placement = Placement()) -> LoadedModel:
    """The config's model in eval mode where `placement` says. Parts without weights files get random
    weights seeded from run.seed, so that every command that loads the same config answers the same."""
    torch.manual_seed(config.run.seed)
    model = load_for_inference(config, placement.device, placement.low_resource, placement.bits,
                               placement.half_dtype, placement.device_map, placement.max_gpu_memory)
    return LoadedModel(config, model, image_processor_for(config))


def model_loader(config: DictConfig, placement: Placement) -> Callable[[str], tuple[MiniGPT, Callable]]:
    """Loads the config's model on a device named when it is first needed (the agent's model tools load
    lazily, each on the device asked for) -> (model, image transform)."""

    def load(device: str) -> tuple[MiniGPT, Callable]:
        loaded = load_model(config, placement.on(device))
        report_peak_memory(loaded.model.device, "loading")
        return loaded.model, loaded.image_processor
    return load


def image_processor_for(config: DictConfig) -> Callable:
    """The image transform for chatting with the config's model: its data sets' eval processor, at the
    model's input size and with its vision tower's normalisation."""
    tower = tower_shape(config.model)
    return inference_image_processor(config.datasets.values(), input_image_size(config.model), tower.mean, tower.std)


def pick_device(gpu_id: int | None) -> torch.device:
    if gpu_id is not None and torch.cuda.is_available():
        return torch.device("cuda", gpu_id)
    return torch.device("cpu")


def load_for_inference(config: DictConfig, device: torch.device, low_resource: bool | None = None,
                       bits: int | None = None, half_dtype: torch.dtype = torch.float16,
                       device_map: str | None = None, max_gpu_memory: str | None = None):
    """-> model in eval mode. With low_resource, the LLM's linear layers run in int8 or NF4 (bitsandbytes,
    `model.low_resource_bits` unless `bits` is given). On a GPU the frozen parts run in `half_dtype`.
    With `device_map` (auto | sequential) the LLM is split across the visible GPUs (see split_llm).

    An LLM from a folder is quantised as it loads; one built from config gets its weights from `ckpt`
    first and is quantised after, so both paths end with the same quantised layers.
    """
    model_cfg = config.model.copy()
    if device_map:
        check_device_map(device_map, device, low_resource)
        if model_cfg.low_resource:  # the eval configs' default; a split LLM runs in half precision instead
            print("device map: the LLM is split in half precision, not quantised (model.low_resource ignored)",
                  file=sys.stderr)
        model_cfg.low_resource = False
    elif low_resource is not None:
        model_cfg.low_resource = low_resource
    if bits is not None:
        model_cfg.low_resource_bits = bits
    if device.type == "cuda":
        model_cfg.device_8bit = device.index or 0
    compute_dtype = half_dtype if device.type == "cuda" else torch.float32
    # A split LLM waits on the CPU, in half precision, until its weights are in; then it is placed.
    model = registry.get("model", model_cfg.arch).from_config(model_cfg, device, compute_dtype,
                                                              llm_on_cpu=bool(device_map))
    if model_cfg.ckpt:
        report = load_weights(model, model_cfg.ckpt)
        if report["unexpected"]:  # weights the model has no place for, e.g. LoRA weights under lora_r: 0
            print(f"{model_cfg.ckpt}: {len(report['unexpected'])} weights not used by this model "
                  f"(first: {', '.join(report['unexpected'][:3])})", file=sys.stderr)
    if model_cfg.low_resource and not model_cfg.llama_model:
        quantize_linear_layers(model.llama_model, model_cfg.low_resource_bits, compute_dtype)
    if device_map:
        llm = model.llama_model
        model.llama_model = split_llm(llm, plan_device_map(llm, device_map, max_gpu_memory, compute_dtype))
    model.eval()
    return model


def check_device_map(device_map: str, device: torch.device, low_resource: bool | None) -> None:
    """Refuse a split that cannot run, saying why."""
    if importlib.util.find_spec("accelerate") is None:
        raise MissingExtraError("a device map", "accelerate", "gpu")
    if torch.cuda.device_count() == 0:
        raise InputError(f"device map '{device_map}': no CUDA GPU is visible to split the LLM across")
    if device.type != "cuda":
        raise InputError(f"device map '{device_map}': the vision side is on {device}; split the LLM across GPUs "
                         "with the vision side on one of them (leave out --cpu)")
    if low_resource:
        raise InputError("a device map splits a half-precision LLM across GPUs; low_resource (8 or 4 bits) "
                         "instead fits it on one: choose one of the two")


def plan_device_map(llm: torch.nn.Module, strategy: str = "auto", max_gpu_memory: str | dict | None = None,
                    dtype: torch.dtype = torch.float16) -> dict[str, int | str]:
    """accelerate's device map for the LLM: module name -> GPU index, whole decoder layers per GPU.
    `auto` balances the layers over the GPUs, `sequential` fills GPU 0 first; `max_gpu_memory` ("20GiB",
    or {gpu: size}) caps what each GPU may hold (default: what is free on it)."""
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    if strategy not in ("auto", "sequential"):
        raise InputError(f"device map '{strategy}': choose auto or sequential")
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm  # under peft's wrapper
    no_split = list(getattr(base, "_no_split_modules", None) or [])
    max_memory = max_gpu_memory
    if isinstance(max_gpu_memory, str):
        max_memory = {index: max_gpu_memory for index in range(torch.cuda.device_count())}
    if strategy == "auto":
        max_memory = get_balanced_memory(llm, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype)
    device_map = infer_auto_device_map(llm, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype)
    off_gpu = sorted({str(place) for place in device_map.values() if not isinstance(place, int)})
    if off_gpu:
        raise InputError(f"the LLM does not fit on the GPUs' memory (parts would go to {', '.join(off_gpu)}); "
                         "use more GPUs, a larger max_gpu_memory, or low_resource (8 bits)")
    return device_map


def split_llm(llm: torch.nn.Module, device_map: dict[str, int | str], offload_dir: str | None = None) -> torch.nn.Module:
    """Place each part where the map says; accelerate's hooks carry activations from device to device
    (and bring in the weights of parts mapped to "disk", kept under `offload_dir`)."""
    from accelerate import dispatch_model

    return dispatch_model(llm, device_map=device_map, offload_dir=offload_dir)
