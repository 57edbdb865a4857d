"""Checks of the run section that a single key's allowed values cannot express: registered schedules, the
optional packages a run uses, how the LLM's quantisation and DeepSpeed fit the model, and
a writable output folder."""
from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig

from minigpt.common import registry
from minigpt.common.errors import install_hint
from minigpt.config.validation.checker import Checker
from minigpt.runners.deepspeed_config import deepspeed_settings
from minigpt.runners.engines import deepspeed_micro_batch


def validate_run(run: DictConfig, checker: Checker) -> None:
    checker.check_allowed_values(run, "run")
    schedules = registry.names("lr_scheduler")
    if run.lr_sched not in schedules:
        checker.fail("run.lr_sched", f"unknown schedule '{run.lr_sched}'; known: {', '.join(schedules)}")
    if run.resume_ckpt_path and run.resume_ckpt_path != "latest":
        checker.check_path("run.resume_ckpt_path", run.resume_ckpt_path)
    if checker.for_planning:  # the optional packages below are needed by the run, not by its plan
        return
    if run.wandb_log and importlib.util.find_spec("wandb") is None:
        checker.fail("run.wandb_log", install_hint("wandb", "wandb"))
    if run.tensorboard_log and importlib.util.find_spec("tensorboard") is None:
        checker.fail("run.tensorboard_log", install_hint("tensorboard", "tensorboard"))


def validate_training_run(config: DictConfig, checker: Checker) -> None:
    """What only training needs: a quantised LLM that can train, DeepSpeed's settings, the output folder."""
    if config.model.low_resource and config.model.parts.llm.mode == "full":
        checker.fail("model.low_resource", "a quantised LLM does not train fully: set model.parts.llm.mode to lora "
                                           "(QLoRA) or frozen")
    if config.model.low_resource and config.run.deepspeed_config:
        checker.fail("model.low_resource", "a quantised LLM trains under DDP (torchrun), not under DeepSpeed")
    if config.run.deepspeed_config:
        _check_deepspeed(config, checker)
    if not checker.for_planning:
        _check_output_dir(config.run, checker)


def _check_deepspeed(config: DictConfig, checker: Checker) -> None:
    if importlib.util.find_spec("deepspeed") is None and not checker.for_planning:
        checker.fail("run.deepspeed_config", install_hint("deepspeed", "gpu"))
    run = config.run
    try:
        on_gpu = run.device.startswith("cuda") and torch.cuda.is_available()
        deepspeed_settings(run, deepspeed_micro_batch(config), on_gpu)
    except (ValueError, OSError) as error:
        checker.fail("run.deepspeed_config", str(error))


def _check_output_dir(run: DictConfig, checker: Checker) -> None:
    """Checkpoints and logs must be writable: found now, not after minutes of building a 7B model. A file
    is written and removed where the folder would be made, which no permission bit or mount flag fools."""
    folder = Path(os.path.expanduser(run.output_dir)).absolute()
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists())
    if not existing.is_dir():
        checker.fail("run.output_dir", f"'{run.output_dir}': {existing} is a file, not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=existing):
            pass
    except OSError as error:
        checker.fail("run.output_dir", f"'{run.output_dir}': {existing} is not writable ({error.strerror})")
