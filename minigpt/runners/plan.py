"""`minigpt plan`: what a config would build and need, before anything is loaded.

    minigpt plan --cfg-path minigptv2_finetune --options model.llama_model=/path/holding/config.json \\
                 --gpus 4 --gpu-memory 24GB

The model is built on the meta device as the config would run it (plan_model.py): parameters per part,
trainable and frozen, image tokens per image, and the context budget against the LLM's positions. Then
memory per GPU at the config's batch, length, precision and ZeRO stage (plan_memory.py), the data sets'
sizes and the steps per epoch where the files are there, and with a GPU size whether it fits and which
levers would make it fit. A training plan is made for a config whose data sets have batch sizes,
an inference plan (chat, serve, eval) otherwise.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import torch
from omegaconf import DictConfig
from torch.utils.data import IterableDataset

from minigpt.common.errors import InputError
from minigpt.common.paths import resolve_path, shard_paths
from minigpt.datasets.builders.base import build_dataset
from minigpt.runners.deepspeed_config import read_settings
from minigpt.runners.engines import batch_size_of
from minigpt.runners.plan_memory import (CUDA_RESERVED, GIB, LeverResult, Memory, RunShape, fit_search, levers_for,
                                         memory_per_gpu)
from minigpt.runners.plan_model import ModelStats, llm_config_of, model_stats, planned_model

QUESTION_TOKENS = 64  # a first question's text and template: room for MiniGPT-v2's and LLaVA's instructions
SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(G|GB|GiB|M|MB|MiB)?\s*$", re.IGNORECASE)


def parse_memory_size(text: str) -> float:
    """"24GB", "24GiB", "24" (GiB), "80000MiB" -> bytes. GPU makers' GB are GiB (a 24 GB card holds 24 GiB)."""
    match = SIZE.match(text)
    if not match:
        raise InputError(f"--gpu-memory: '{text}' is not a size such as 24GB or 80GiB")
    unit = (match.group(2) or "G").upper()[0]
    size = float(match.group(1)) * (GIB if unit == "G" else 2**20)
    if size <= CUDA_RESERVED:
        raise InputError(f"--gpu-memory: {text} is no more than the {CUDA_RESERVED / GIB:.0f} GiB the CUDA context "
                         "and workspaces take")
    return size


@dataclass
class ContextBudget:
    """The longest row a config lets through: BOS + the prompt (max_context_len, image tokens included;
    the model cuts it to the LLM's positions) + max_txt_len tokens after the first question."""

    max_context_len: int
    max_txt_len: int
    image_tokens: int
    positions: int

    @property
    def longest_row(self) -> int:
        return 1 + min(self.max_context_len, self.positions) + self.max_txt_len

    @property
    def typical_row(self) -> int:
        """BOS, one image, a question of QUESTION_TOKENS and max_txt_len tokens after it: the row a training
        plan takes unless --seq-len says otherwise (longer prompts are rare; longest_row bounds them)."""
        return min(1 + self.image_tokens + QUESTION_TOKENS + self.max_txt_len, self.longest_row)

    @property
    def over(self) -> bool:
        return 1 + self.max_context_len + self.max_txt_len > self.positions


@dataclass
class DataSetSize:
    name: str
    batch_size: int | None
    samples: int | None  # None: not known (files not here, or streamed)
    note: str = ""


@dataclass
class Plan:
    name: str
    training: bool
    stats: ModelStats
    shape: RunShape
    memory: Memory
    context: ContextBudget
    data: list[DataSetSize]
    steps_per_epoch: tuple[int | None, str]
    epochs: int
    on_gpu: bool = True
    seq_len_given: bool = False
    gpu_memory: float | None = None
    levers_alone: list[LeverResult] | None = None
    levers_together: LeverResult | None = None

    @property
    def fits(self) -> bool | None:
        return None if self.gpu_memory is None else self.memory.total <= self.gpu_memory - CUDA_RESERVED


def make_plan(config: DictConfig, name: str, *, training: bool | None = None, gpus: int = 1,
              gpu_memory: float | None = None, seq_len: int | None = None,
              llm_config_path: str | None = None) -> Plan:
    """The plan of `config` (as load_config(..., for_planning=True) gives it) on `gpus` GPUs. `training`
    None: a training plan when every data set has a batch size. `seq_len`: tokens per row (default: a
    row of one image, a question and max_txt_len in training; the full context in inference)."""
    cfg, run = config.model, config.run
    if training is None:
        training = bool(config.datasets) and all(batch_size_of(ds, run) for ds in config.datasets.values())
    on_gpu = not training or str(run.device).startswith("cuda")
    amp = on_gpu and (run.amp or not training)  # inference on a GPU: float16, as load_for_inference runs it
    compute_dtype = torch.float32 if not amp else torch.float16 if not training else \
        {"bfloat16": torch.bfloat16, "float16": torch.float16}[run.amp_dtype]
    llm_config = llm_config_of(cfg, llm_config_path)
    adapters = {ds.adapter for ds in config.datasets.values() if ds.adapter} if training else set()

    @functools.cache
    def stats_for(bits: int | None) -> ModelStats:
        """The planned model's stats, with its LLM quantised to `bits` (None: as the config says)."""
        variant = cfg if bits is None else _quantized(cfg, bits)
        model, quantized = planned_model(variant, llm_config, compute_dtype, on_gpu)
        if model.adapters:  # the adapters the data sets name train, as in the training recipe
            model.adapters.set_trainable(adapters)
        return model_stats(model, variant, quantized)

    stats = stats_for(None)
    context = ContextBudget(cfg.max_context_len, cfg.max_txt_len, stats.image_tokens,
                            llm_config.max_position_embeddings)
    shape = _run_shape(config, training, gpus, amp, seq_len, context)
    data = [_dataset_size(section, dataset, run) for section, dataset in config.datasets.items()] if training else []
    plan = Plan(name, training, stats, shape, memory_per_gpu(stats, shape), context, data,
                _steps_per_epoch(run, data, gpus), run.max_epoch, on_gpu, seq_len is not None, gpu_memory)
    if gpu_memory is not None and not plan.fits:
        levers = levers_for(shape, stats, cfg.parts.llm.mode, deepspeed_ok=not cfg.low_resource)
        plan.levers_alone, plan.levers_together = fit_search(levers, stats_for, shape, gpu_memory - CUDA_RESERVED)
    return plan


def _quantized(cfg: DictConfig, bits: int) -> DictConfig:
    """The model section with its LLM quantised; a fully trained LLM becomes LoRA on top (QLoRA)."""
    variant = cfg.copy()
    variant.low_resource, variant.low_resource_bits = True, bits
    if variant.parts.llm.mode == "full":
        variant.parts.llm.mode, variant.lora_r = "lora", variant.lora_r or 64
    return variant


def _run_shape(config: DictConfig, training: bool, gpus: int, amp: bool, seq_len: int | None,
               context: ContextBudget) -> RunShape:
    cfg, run = config.model, config.run
    zero_stage = read_settings(run.deepspeed_config).get("zero_optimization", {}).get("stage", 0) \
        if (training and run.deepspeed_config) else 0
    if training:
        samples = max(batch_size_of(ds, run) for ds in config.datasets.values())
        packed_row = run.packing_length if run.packing and run.packing_length else 0
        length = seq_len or max(context.typical_row, packed_row)
    else:
        samples, length = 1, seq_len or min(cfg.max_context_len, context.positions)
    return RunShape(training=training, samples=samples, seq_len=length, gpus=gpus, zero_stage=zero_stage, amp=amp,
                    llm_checkpointing=cfg.use_grad_checkpoint_llm, vision_checkpointing=cfg.use_grad_checkpoint,
                    logits_where_scored=cfg.logits_where_scored, eager_attention=cfg.attn_implementation == "eager",
                    logits_chunk_size=cfg.logits_chunk_size)


def _dataset_size(name: str, dataset: DictConfig, run: DictConfig) -> DataSetSize:
    """Its number of samples when its files are here (the annotations are read, no image is)."""
    batch_size = batch_size_of(dataset, run)
    info = dataset.build_info
    shards = shard_paths(info.storage) if info.storage and ".tar" in info.storage else []
    files = [path for path in (info.ann_path, info.image_path, *(shards or [info.storage])) if path]
    if not files:
        return DataSetSize(name, batch_size, None, "no files named")
    missing = [path for path in files if not resolve_path(path).exists()]
    if missing:
        return DataSetSize(name, batch_size, None, f"not here: {missing[0]}")
    if shards:
        return DataSetSize(name, batch_size, None, f"streamed from {len(shards)} shards")
    try:
        built = build_dataset(name, dataset, "train")
    except (InputError, OSError, ValueError) as error:
        return DataSetSize(name, batch_size, None, f"unreadable: {str(error).splitlines()[0]}")
    if isinstance(built, IterableDataset):
        return DataSetSize(name, batch_size, None, "streamed")
    return DataSetSize(name, batch_size, len(built))


def _steps_per_epoch(run: DictConfig, data: list[DataSetSize], gpus: int) -> tuple[int | None, str]:
    """As the training recipe counts them: run.iters_per_epoch, else one pass over a single map-style set."""
    if run.iters_per_epoch:
        return run.iters_per_epoch, "run.iters_per_epoch"
    if len(data) == 1 and data[0].samples is not None:
        batches = data[0].samples // (data[0].batch_size * gpus)
        origin = f"one pass: {batches} batches of {data[0].batch_size} on {gpus} GPU(s), accum_grad_iters " \
                 f"{run.accum_grad_iters}"
        return max(1, batches // run.accum_grad_iters), origin
    return None, "unknown until the data is here (mixed or streamed data sets need run.iters_per_epoch)"


# ---- the report ---------------------------------------------------------------------------------------

def render_plan(plan: Plan) -> str:
    """The plan as the terminal shows it."""
    sections = [_header(plan), _parts_table(plan), _context_lines(plan), _memory_lines(plan)]
    if plan.training:
        sections.append(_data_lines(plan))
    if plan.gpu_memory is not None:
        sections.append(_fit_lines(plan))
    return "\n\n".join(sections)


def _gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB"


def _header(plan: Plan) -> str:
    shape, config = plan.shape, plan.stats.llm_config
    engine = f"DeepSpeed ZeRO-{shape.zero_stage}" if shape.zero_stage else ("DDP" if shape.gpus > 1 else "one process")
    if plan.training:
        precision = "16-bit AMP" if shape.amp else "float32"
        where = f"{shape.gpus} GPU(s)" if plan.on_gpu else "the CPU"
        kind = f"training plan on {where}, {engine}"
    else:
        precision, kind = "float16 on a GPU", "inference plan (chat, serve, eval)"
    return (f"{plan.name}: {kind}, {precision}\n"
            f"LLM: {config.model_type}, {config.num_hidden_layers} layers, hidden {config.hidden_size}, vocabulary "
            f"{config.vocab_size}, {config.max_position_embeddings} positions"
            + (f"; quantised to {plan.stats.quantized_bits} bits" if plan.stats.quantized_bits else ""))


def _parts_table(plan: Plan) -> str:
    rows = [("part", "parameters", "trainable", "frozen", "weights")]
    for part, count in plan.stats.parts.items():
        dtypes = ", ".join(sorted(count.dtypes))
        rows.append((part, f"{count.trainable + count.frozen:,}", f"{count.trainable:,}", f"{count.frozen:,}",
                     f"{_gib(count.weight_bytes)} ({dtypes})" if dtypes else "-"))
    parts = plan.stats.parts.values()
    rows.append(("total", f"{plan.stats.total_params:,}", f"{plan.stats.trainable_params:,}",
                 f"{sum(c.frozen for c in parts):,}", _gib(sum(c.weight_bytes for c in parts))))
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    return "\n".join(f"{row[0]:<{widths[0]}}  " + "  ".join(f"{cell:>{width}}" for cell, width in
                                                          zip(row[1:4], widths[1:4])) + f"  {row[4]}" for row in rows)


def _context_lines(plan: Plan) -> str:
    context = plan.context
    lines = [f"image tokens per image: {context.image_tokens}",
             f"context budget: BOS 1 + max_context_len {context.max_context_len} (an image's {context.image_tokens} "
             f"tokens included) + max_txt_len {context.max_txt_len} = "
             f"{1 + context.max_context_len + context.max_txt_len} tokens"]
    if context.over:
        room = context.positions - context.max_txt_len - 1
        lines.append(f"  ! over the LLM's {context.positions} positions (max_position_embeddings): the longest rows "
                     f"would run past what it was trained on; set model.max_context_len <= {room}"
                     + (f" or lower model.max_txt_len" if room < context.image_tokens + 1 else ""))
    return "\n".join(lines)


def _memory_lines(plan: Plan) -> str:
    shape, memory = plan.shape, plan.memory
    where = "per GPU" if plan.on_gpu else "of the process (run.device: cpu)"
    if plan.training:
        what = f"memory {where}, micro-batch of {shape.samples} x {shape.seq_len} tokens: {_row_origin(plan)}"
        vision = plan.stats.vision
        how = (f"LLM {'with' if shape.llm_checkpointing else 'without'} gradient checkpointing; vision encoder "
               + (("trained" + (" with checkpointing" if shape.vision_checkpointing else "")) if vision.trains
                  else "frozen (no_grad)"))
        labels = ("weights", "gradients", "optimizer", "activations")
    else:
        what = f"memory {where}, one conversation of {shape.seq_len} tokens (the full context), beam 1"
        how = "KV cache and one block's working tensors"
        labels = ("weights", "gradients", "optimizer", "KV cache etc.")
    values = (memory.weights, memory.gradients, memory.optimizer, memory.activations)
    lines = [what] + [f"  {label:<14}{_gib(value):>12}" for label, value in zip(labels, values)
                      if plan.training or value]
    lines[-1] += f"   ({how})"
    lines.append(f"  {'total':<14}{_gib(memory.total):>12}")
    return "\n".join(lines)


def _row_origin(plan: Plan) -> str:
    """Why the rows are as long as planned."""
    context, length = plan.context, plan.shape.seq_len
    if plan.seq_len_given:
        return "--seq-len"
    if length != context.typical_row:
        return "run.packing_length"
    longest = "" if length == context.longest_row else \
        f"; the longest the config allows is {context.longest_row}: --seq-len {context.longest_row} plans that"
    return (f"BOS, an image's {context.image_tokens} tokens, a {QUESTION_TOKENS}-token question and max_txt_len "
            f"{context.max_txt_len}{longest}")


def _data_lines(plan: Plan) -> str:
    steps, origin = plan.steps_per_epoch
    if steps is None:
        lines = [f"steps per epoch: {origin}"]
    else:
        lines = [f"steps per epoch: {steps:,} ({origin}) x {plan.epochs} epochs = {steps * plan.epochs:,} steps"]
    width = max(len(size.name) for size in plan.data) if plan.data else 0
    for size in plan.data:
        count = f"{size.samples:,} samples" if size.samples is not None else size.note
        lines.append(f"  {size.name:<{width}}  batch {size.batch_size}  {count}")
    return "\n".join(lines)


def _fit_lines(plan: Plan) -> str:
    usable = plan.gpu_memory - CUDA_RESERVED
    head = (f"fits one {plan.gpu_memory / GIB:.1f} GiB GPU ({usable / GIB:.1f} GiB usable: {CUDA_RESERVED / GIB:.0f} "
            f"GiB kept for the CUDA context and workspaces)? {'yes' if plan.fits else 'no'}: {_gib(plan.memory.total)}")
    if plan.fits:
        return head
    batch = f" (batch {plan.shape.samples} unless it says)" if plan.training else ""
    lines = [head, f"levers, each alone{batch}:"]
    for result in plan.levers_alone:
        verdict = "fits" if result.fits else "no  "
        lines.append(f"  {verdict}  {_gib(result.memory.total):>11}  {_lever_names(result, plan)}")
    together = plan.levers_together
    if not any(result.fits for result in plan.levers_alone):
        lines.append(f"together: {_lever_names(together, plan)}: {_gib(together.memory.total)}" if together else
                     "together: no combination of up to three levers fits; more GPUs with ZeRO-3 (--gpus) or a "
                     "shorter --seq-len")
    return "\n".join(lines)


def _lever_names(result: LeverResult, plan: Plan) -> str:
    names = [lever.name for lever in result.levers]
    if result.samples != plan.shape.samples:
        factor = plan.shape.samples // result.samples  # (a divisor: fit_search keeps the samples per step)
        names.append(f"batch {result.samples} (accum_grad_iters x{factor} keeps the samples per step)")
    return " + ".join(names) or f"batch {plan.shape.samples}"
