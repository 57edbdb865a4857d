"""Load a model for inference from an eval config: build, load `ckpt`, optionally quantise to 8 or 4 bits."""
from __future__ import annotations

import ctypes
import gc
import importlib.util
import resource
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig

from minigpt.common import registry
from minigpt.common.errors import InputError, MissingExtraError
from minigpt.models.llm import quantize_linear_layers
from minigpt.models.weights import load_weights


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


PROC_STATUS, PROC_CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def peak_memory_gib(device: torch.device) -> float:
    """Peak memory since the process started or reset_peak_memory: torch's GPU allocations, or on the CPU
    the process's peak resident set, which counts the Python runtime and libraries as well."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    if PROC_STATUS.exists():  # Linux: the high-water mark that reset_peak_memory can lower
        line = next(line for line in PROC_STATUS.read_text().splitlines() if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 2**20  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB


def reset_peak_memory(device: torch.device) -> None:
    """Start peak_memory_gib afresh from what is held now, so that a measurement leaves out what was built
    and freed before it. On the CPU (Linux) freed heap goes back to the system first, so that the
    resident set is what is still in use."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return
    gc.collect()
    if PROC_CLEAR_REFS.exists():
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass
        PROC_CLEAR_REFS.write_text("5")  # 5: reset the peak resident set to the current one


def report_peak_memory(device: torch.device, when: str) -> None:
    kind = "GPU" if device.type == "cuda" else "resident"
    print(f"peak {kind} memory {peak_memory_gib(device):.2f} GiB after {when}", file=sys.stderr)
