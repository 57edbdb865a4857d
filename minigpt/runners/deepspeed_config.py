"""The DeepSpeed config of a run: the user's JSON or YAML, with what our run config already says filled in.

DeepSpeed JSONs shipped with LLaVA, LLaMA-Factory and the Hugging Face Trainer write `"auto"` wherever
the trainer knows the value. We fill each one from the run as the Trainer would:

    train_micro_batch_size_per_gpu   the first data set's batch_size
    gradient_accumulation_steps      run.accum_grad_iters
    train_batch_size                 micro batch x accumulation x ranks
    gradient_clipping                run.max_grad_norm (0 = off)
    fp16.enabled / bf16.enabled      run.amp and run.amp_dtype, on a GPU
    zero_optimization.reduce_bucket_size           hidden^2          (DeepSpeed's default when the
    zero_optimization.stage3_prefetch_bucket_size  0.9 hidden^2       LLM's hidden size is not known yet)
    zero_optimization.stage3_param_persistence_threshold  10 hidden
    optimizer.params lr / betas / eps / weight_decay      run.init_lr, (0.9, run.beta2), 1e-8, run.weight_decay

A number written in both places must agree, so that one file says what the run does. A `scheduler` block
is refused: run.lr_sched schedules the learning rate.
"""
from __future__ import annotations

import json
import os

from omegaconf import DictConfig, OmegaConf

from minigpt.common.errors import InputError
from minigpt.common.paths import resolve_path

AUTO = "auto"
PRECISION_ORIGIN = "run.amp / run.amp_dtype on this device"
ORIGIN = {"train_micro_batch_size_per_gpu": "the data sets' batch_size", "gradient_accumulation_steps":
          "run.accum_grad_iters", "gradient_clipping": "run.max_grad_norm",
          "train_batch_size": "batch_size x run.accum_grad_iters x ranks", "bf16": PRECISION_ORIGIN,
          "fp16": PRECISION_ORIGIN}


def read_settings(source) -> dict:
    """run.deepspeed_config as a dict: a JSON or YAML file, or written inline."""
    if isinstance(source, str):
        path = resolve_path(source)
        if not path.exists():
            raise InputError(f"'{source}' does not exist")
        return json.loads(path.read_text()) if path.suffix == ".json" else OmegaConf.to_container(OmegaConf.load(path))
    return OmegaConf.to_container(source) if isinstance(source, DictConfig) else dict(source)


def _agree(settings: dict, key: str, value) -> None:
    """Set `key` to our value; a number the user wrote there must be the same."""
    theirs = settings.get(key)
    if isinstance(theirs, dict):
        theirs = theirs.get("enabled")
    if theirs not in (None, AUTO) and theirs != value:
        raise InputError(f"{key} is {theirs} there but {value} from {ORIGIN[key]}; set it in one place")


def _fill_zero(zero: dict, hidden_size: int | None) -> None:
    sizes = {"reduce_bucket_size": lambda h: h * h, "stage3_prefetch_bucket_size": lambda h: int(0.9 * h * h),
             "stage3_param_persistence_threshold": lambda h: 10 * h}
    for key, value in list(zero.items()):
        if value != AUTO:
            continue
        if key not in sizes:
            raise InputError(f"zero_optimization.{key} is 'auto', which we cannot fill; give it a value")
        if hidden_size:
            zero[key] = sizes[key](hidden_size)
        else:
            del zero[key]  # DeepSpeed's default


def _fill_optimizer(optimizer: dict, run: DictConfig) -> None:
    ours = {"lr": run.init_lr, "betas": [0.9, run.beta2], "eps": 1e-8, "weight_decay": run.weight_decay}
    params = optimizer.setdefault("params", {})
    for key, value in params.items():
        if value == AUTO:
            if key not in ours:
                raise InputError(f"optimizer.params.{key} is 'auto', which we cannot fill; give it a value")
            params[key] = ours[key]


def deepspeed_settings(run: DictConfig, micro_batch_size: int, on_gpu: bool, world_size: int | None = None,
                       hidden_size: int | None = None) -> dict:
    """The DeepSpeed config for this run (InputError when it cannot be run as written)."""
    settings = read_settings(run.deepspeed_config)
    world_size = world_size or int(os.environ.get("WORLD_SIZE", 1))
    amp = run.amp and on_gpu
    ours = {"train_micro_batch_size_per_gpu": micro_batch_size, "gradient_accumulation_steps": run.accum_grad_iters,
            "gradient_clipping": float(run.max_grad_norm or 0.0),
            "train_batch_size": micro_batch_size * run.accum_grad_iters * world_size}
    precision = {"bf16": amp and run.amp_dtype == "bfloat16", "fp16": amp and run.amp_dtype == "float16"}
    for key, value in {**ours, **precision}.items():
        _agree(settings, key, value)
    settings.update(ours)
    for key, enabled in precision.items():
        settings[key] = {**settings.get(key, {}), "enabled": enabled}
    if "scheduler" in settings:
        raise InputError(f"leave out the scheduler ({settings['scheduler'].get('type')}); run.lr_sched schedules "
                         "the learning rate")
    zero = settings.setdefault("zero_optimization", {})
    if zero.get("stage", 0) not in (1, 2, 3):
        raise InputError(f"zero_optimization.stage {zero.get('stage', 0)} is not 1, 2 or 3 (stage 0 is plain data "
                         "parallelism: leave run.deepspeed_config unset for that)")
    _fill_zero(zero, hidden_size)
    if "optimizer" in settings:
        _fill_optimizer(settings["optimizer"], run)
    elif zero.get("offload_optimizer"):
        settings.setdefault("zero_force_ds_cpu_optimizer", False)  # our torch AdamW steps on the CPU copy
    leftover = _auto_paths(settings)
    if leftover:
        raise InputError(f"{', '.join(leftover)} {'is' if len(leftover) == 1 else 'are'} 'auto', which we cannot fill; "
                         "give a value")
    settings.setdefault("steps_per_print", 10**9)  # we log ourselves
    return settings


def _auto_paths(value, prefix: str = "") -> list[str]:
    """The dotted keys still set to 'auto'."""
    if isinstance(value, dict):
        return [path for key, item in value.items() for path in _auto_paths(item, f"{prefix}{key}.")]
    return [prefix.rstrip(".")] if value == AUTO else []
