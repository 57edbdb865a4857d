"""Memory for inference: the peak a process reached (GPU allocations, or the CPU's resident set), and a
model's rough size before it loads, so that the agent can say what loading a tool will cost."""
from __future__ import annotations

import ctypes
import gc
import resource
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig

from minigpt.common.paths import resolve_path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
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


def estimated_model_mb(model_config: DictConfig, low_resource: bool | None = None, bits: int | None = None) -> int:
    """A rough size of a model before it loads: the weights files the config names (the LLM folder, the
    ViT and the checkpoint), or, for an inline LLM config, its parameter count in fp32; halved or quartered
    when the LLM is quantised (`low_resource` and `bits` default to the config's)."""
    files = [resolve_path(path) for path in (model_config.llama_model, model_config.vit_weights, model_config.ckpt)
             if path]
    size = sum(sum(f.stat().st_size for f in path.rglob("*") if f.suffix in WEIGHT_SUFFIXES) if path.is_dir()
               else path.stat().st_size for path in files if path.exists())
    if not model_config.llama_model and model_config.llama_config:
        llm = model_config.llama_config
        hidden, layers = llm.get("hidden_size", 4096), llm.get("num_hidden_layers", 32)
        size += 4 * (2 * llm.get("vocab_size", 32000) * hidden
                     + layers * (4 * hidden**2 + 3 * hidden * llm.get("intermediate_size", 11008)))
    quantised = low_resource if low_resource is not None else model_config.low_resource
    return int(size / 2**20 / ((bits or model_config.low_resource_bits) / 4 if quantised else 1))
