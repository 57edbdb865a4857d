"""How a training step turns gradients into new weights: plain PyTorch (DDP) or DeepSpeed ZeRO.

The recipe is the same loop either way; it asks its engine for four things:

    with engine.accumulating(last_micro):   # DDP skips the gradient all-reduce until the last micro-batch
        loss = engine.module(batch)["loss"]
        engine.backward(loss)
    grad_norm = engine.step()                # clip, optimiser step, zero the gradients

and for checkpoints `state_dict()` (into rank 0's training_state.pt), `save(folder)` (files every rank
writes) and `load_state_dict(state, folder)`. DeepSpeed keeps its optimiser partitions in
`<checkpoint>/deepspeed/`, one file per rank, written and read by every rank.
"""
from __future__ import annotations

import contextlib
import importlib
import math
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from minigpt.common.checkpoint import load_tensors_only
from minigpt.common.dist import DistInfo, barrier
from minigpt.common.errors import InputError

DEEPSPEED_TAG = "deepspeed"  # the subfolder of a checkpoint that holds DeepSpeed's files


class PlainEngine:
    """AdamW on every rank, DDP to average gradients, a GradScaler when AMP runs in float16."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, dist: DistInfo, max_grad_norm: float | None,
                 fp16_scaling: bool, find_unused_parameters: bool = False):
        self.optimizer = optimizer
        self.parameters = [p for group in optimizer.param_groups for p in group["params"]]
        self.max_grad_norm = max_grad_norm or math.inf
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16_scaling)
        self.module = model
        if dist.distributed:
            device_ids = [dist.device.index] if dist.device.type == "cuda" else None
            self.module = DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)
        self.distributed = dist.distributed

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    def accumulating(self, last_micro: bool):
        return self.module.no_sync() if self.distributed and not last_micro else contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self) -> float:
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return float(grad_norm)

    def gathered(self, parameters: list[nn.Parameter]):
        return contextlib.nullcontext()  # every rank holds every parameter whole

    def state_dict(self) -> dict:
        """Goes into training_state.pt (tensors and numbers only, so it loads with weights_only)."""
        return {"engine": "plain", "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict, folder: Path) -> None:
        check_same_engine(state, {"engine": "plain"}, folder)
        configured = [{key: group[key] for key in ("weight_decay", "betas", "lr_mult") if key in group}
                      for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, settings in zip(self.optimizer.param_groups, configured):
            group.update(settings)  # this run's config wins over the checkpoint's (moments and step stay)
        self.scaler.load_state_dict(state["scaler"])

    def save(self, folder: Path) -> None:
        """Files every rank writes (none: rank 0's training_state.pt holds the whole optimiser)."""


class DeepSpeedEngine:
    """DeepSpeed's engine: ZeRO partitions the optimiser state (stage 1), gradients (2) and parameters (3)
    across ranks, optionally offloaded to the CPU. Our AdamW and its per-part groups go in as they are
    unless the DeepSpeed config names an optimizer of its own."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, settings: dict):
        import deepspeed

        if not torch.cuda.is_available():
            # On the CPU, DeepSpeed compiles a shared-memory all-reduce on first use (about a minute on 2
            # cores). Only its inference all-reduce uses it; training's collectives go through gloo.
            importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
        own_optimizer = "optimizer" in settings
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, config=settings, optimizer=None if own_optimizer else optimizer,
            model_parameters=optimizer.param_groups if own_optimizer else None)
        self.engine.checkpoint_engine = weights_only_checkpoint_engine()
        self.module = self.engine
        self.zero_stage = self.engine.zero_optimization_stage()

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups

    def accumulating(self, last_micro: bool):
        return contextlib.nullcontext()  # DeepSpeed counts micro-batches itself (gradient_accumulation_steps)

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss, scale_wrt_gas=False)  # the recipe has already divided by accum_grad_iters
        self.engine.step()  # steps the optimiser only at the accumulation boundary

    def step(self) -> float:
        grad_norm = self.engine.get_global_grad_norm()
        return float(grad_norm) if grad_norm is not None else float("nan")

    def gathered(self, parameters: list[nn.Parameter]):
        """Under ZeRO-3 each rank holds a slice of each parameter: gather them whole (on every rank)."""
        if self.zero_stage != 3:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(parameters, modifier_rank=None)

    def state_dict(self) -> dict:
        return self.layout()

    def layout(self) -> dict:
        """What the optimiser partitions depend on: a checkpoint resumes only into the same layout."""
        return {"engine": "deepspeed", "zero_stage": self.zero_stage, "world_size": self.engine.world_size}

    def load_state_dict(self, state: dict, folder: Path) -> None:
        check_same_engine(state, self.layout(), folder)
        self.engine.load_checkpoint(str(folder), tag=DEEPSPEED_TAG, load_module_strict=False,
                                    load_optimizer_states=True, load_lr_scheduler_states=False)

    def save(self, folder: Path) -> None:
        """Every rank writes its optimiser partition; frozen weights are left out (they come from the config)."""
        self.engine.save_checkpoint(str(folder), tag=DEEPSPEED_TAG, save_latest=False, exclude_frozen_parameters=True)
        barrier()
        for script in folder.glob("zero_to_*.py"):  # DeepSpeed's converters: model.safetensors already has the weights
            script.unlink(missing_ok=True)


def check_same_engine(state: dict, ours: dict, folder: Path) -> None:
    """A checkpoint's optimiser state fits only the engine layout that wrote it (older ones: plain)."""
    theirs = {"engine": "plain", **{key: state[key] for key in ("engine", "zero_stage", "world_size") if key in state}}
    if theirs != ours:
        def describe(layout: dict) -> str:
            return ", ".join(f"{key} {value}" for key, value in layout.items())

        raise InputError(f"run.resume_ckpt_path: {folder} holds optimiser state for {describe(theirs)}, but this run "
                         f"has {describe(ours)}; resume with the same run.deepspeed_config and number of ranks, or start "
                         f"a new run from its weights with model.ckpt")


def weights_only_checkpoint_engine():
    """DeepSpeed's torch checkpoint engine, loading with weights_only=True: its files are tensors plus a
    few DeepSpeed bookkeeping classes, which are allowed by name; anything else is refused in one line."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    allowed = [ZeroStageEnum, fragment_address, LossScaler, DynamicLossScaler]

    class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            with torch.serialization.safe_globals(allowed):  # also what a refusal counts as allowed
                return load_tensors_only(path, map_location, convertible=False)

    return WeightsOnlyCheckpointEngine()


def batch_size_of(dataset_cfg: DictConfig, run: DictConfig) -> int:
    """A data set's batch size per rank and micro-step: its own, else run.batch_size_train."""
    return dataset_cfg.batch_size or run.batch_size_train


def deepspeed_micro_batch(config: DictConfig) -> int:
    """The micro-batch DeepSpeed is told of: the first data set's batch size."""
    return batch_size_of(next(iter(config.datasets.values())), config.run)
