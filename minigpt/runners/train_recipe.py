"""The training recipe: setup -> train -> save, in one loop that reads top to bottom.

Runs as a plain process, or under `torchrun` as DDP (gloo on the CPU, nccl on GPUs), or with DeepSpeed
ZeRO when `run.deepspeed_config` is set (see engines.py). One optimiser step = `accum_grad_iters`
micro-batches per rank; an epoch = `iters_per_epoch` steps.
"""
from __future__ import annotations

import collections
import contextlib
import importlib.util
import shutil
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from minigpt.common import registry
from minigpt.common.checkpoint import (CheckpointWriteError, latest_checkpoint, load_training_state,
                                       prune_checkpoints, save_checkpoint, save_config, staging_folder)
from minigpt.common.dist import DistInfo, all_reduce_mean, barrier, cleanup, setup_distributed
from minigpt.common.errors import InputError
from minigpt.common.logger import JsonlLogger, MultiLogger, TensorBoardLogger, WandbLogger
from minigpt.conversation.collator import IGNORE_INDEX, collator_for
from minigpt.datasets.accounting import SampleAccounting
from minigpt.datasets.builders.base import build_dataset
from minigpt.datasets.loader import BatchStream, MixedBatches
from minigpt.models.training_model import build_for_training
from minigpt.models.weights import load_weights
from minigpt.runners.curves import plot_curves
from minigpt.runners.deepspeed_config import deepspeed_settings
from minigpt.runners.engines import DeepSpeedEngine, PlainEngine, batch_size_of, deepspeed_micro_batch


class TrainRecipe:
    def __init__(self, config: DictConfig):
        self.config = config
        self.run = config.run
        # What close() and print() read exists from here on, so that close() after a setup that stopped
        # part way (a bad annotation file or checkpoint) lets that error through instead of an AttributeError.
        self.dist: DistInfo | None = None
        self.logger: MultiLogger | None = None

    # ---- setup ----------------------------------------------------------------------------------
    def setup(self) -> None:
        """The steps in order: output folder, model, data, optimiser, engine, then resume."""
        run = self.run
        self.dist = setup_distributed(run.device)
        self.device = self.dist.device
        torch.manual_seed(run.seed)  # the same initial weights on every rank
        self._setup_output()
        self._setup_model()
        self.batches = self._setup_data()
        optimizer = self._setup_optimizer()
        resume = latest_checkpoint(run.output_dir) if run.resume_ckpt_path == "latest" else run.resume_ckpt_path
        if resume:
            load_weights(self.model, resume)  # before the engine: ZeRO-3 partitions the weights it is given
        self._setup_engine(optimizer)
        self.step = 0
        if resume:
            self._resume(Path(resume))
        self._setup_logging()

    def _setup_output(self) -> None:
        """The output folder, made before anything slow is built (validation found it writable)."""
        self.output_dir = Path(self.run.output_dir)
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"run.output_dir: '{self.output_dir}' cannot be written: {error.strerror}") from None

    def _setup_model(self) -> None:
        run = self.run
        use_amp = run.amp and self.device.type == "cuda"
        self.amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[run.amp_dtype]
        self.use_fp16_scaling = use_amp and self.amp_dtype == torch.float16
        self.autocast = (lambda: torch.autocast("cuda", dtype=self.amp_dtype)) if use_amp else contextlib.nullcontext
        compute_dtype = self.amp_dtype if use_amp else torch.float32
        self.model, report = build_for_training(self.config.model, self.device, compute_dtype)
        if report is not None:
            self.print(f"loaded {self.config.model.ckpt}: {len(report['unexpected'])} unexpected keys, "
                       f"trainable parameters not in it: {len(report['missing_trainable'])}")

    def _setup_optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the trainable parts (each with its lr_mult), and the schedule over the run's steps."""
        run = self.run
        # Task adapters: each data set's batches go through the adapter it names, which then trains.
        self.adapter_of = {name: cfg.adapter for name, cfg in self.config.datasets.items()}
        if self.model.adapters:
            self.model.adapters.set_trainable({a for a in self.adapter_of.values() if a})
        self.iters_per_epoch = run.iters_per_epoch or self._one_pass_steps()
        self.total_steps = run.max_epoch * self.iters_per_epoch
        lr_mults = {part: cfg.lr_mult for part, cfg in self.config.model.parts.items()}
        lr_mults.update({f"extra_encoder_{i}": extra.lr_mult for i, extra in enumerate(self.config.model.extra_encoders)})
        groups = self.model.param_groups(run.weight_decay, lr_mults)
        self.trainable = [p for group in groups for p in group["params"]]
        self.num_trainable = sum(p.numel() for p in self.trainable)  # counted whole, before ZeRO-3 partitions them
        if not self.trainable:
            raise InputError("nothing to train: every part of the model is frozen (see model.parts)")
        self.schedule = registry.get("lr_scheduler", run.lr_sched)(
            run.init_lr, run.min_lr, run.warmup_lr, run.warmup_steps, self.total_steps, self.iters_per_epoch,
            run.lr_decay_rate)
        return torch.optim.AdamW(groups, lr=run.init_lr, betas=(0.9, run.beta2))

    def _setup_engine(self, optimizer: torch.optim.Optimizer) -> None:
        run = self.run
        if run.deepspeed_config:
            hidden_size = self.model.llama_model.config.hidden_size
            settings = deepspeed_settings(run, deepspeed_micro_batch(self.config), self.device.type == "cuda",
                                          self.dist.world_size, hidden_size)
            self.engine = DeepSpeedEngine(self.model, optimizer, settings)
        else:
            # With several adapters in play, each step leaves the inactive ones without gradients.
            routed = len(set(self.adapter_of.values())) > 1 and bool(self.model.adapters)
            self.engine = PlainEngine(self.model, optimizer, self.dist, run.max_grad_norm,
                                      fp16_scaling=self.use_fp16_scaling, find_unused_parameters=routed)

    def _resume(self, checkpoint: Path) -> None:
        """Optimiser state and step from `checkpoint` (its weights are already in), if the data layout matches."""
        state = load_training_state(checkpoint)
        saved, ours = state.get("data_layout"), self._data_layout()
        if saved is not None and saved != ours:  # a step would mean other samples: some skipped, some repeated
            changed = ", ".join(f"{key} {saved.get(key)} -> {ours[key]}" for key in ours if saved.get(key) != ours[key])
            raise InputError(f"run.resume_ckpt_path: {checkpoint} was trained with other batches ({changed}); resume "
                             "with the same batch sizes, run.accum_grad_iters and number of ranks, or start a new run "
                             "from its weights with model.ckpt")
        self.engine.load_state_dict(state, checkpoint)
        self.step = state["step"]
        self.print(f"resumed from {checkpoint} at step {self.step}")

    def _setup_logging(self) -> None:
        run = self.run
        if self.dist.is_main:
            save_config(self.config, self.output_dir / "config.yaml")
            loggers = [JsonlLogger(self.output_dir / "log.jsonl")]
            if run.wandb_log:
                loggers.append(WandbLogger(run.wandb_project, run.job_name,
                                           OmegaConf.to_container(self.config, resolve=True), self.output_dir))
            if run.tensorboard_log or (run.tensorboard_log is None and importlib.util.find_spec("tensorboard")):
                loggers.append(TensorBoardLogger(self.output_dir / "tensorboard"))
            self.logger = MultiLogger(loggers)
        adapters = f", adapters trained {sorted(self.model.adapters.trainable)}" if self.model.adapters else ""
        self.print(f"{type(self.model).__name__}: {self.num_trainable:,} trainable parameters, parts "
                   f"{dict(self.model.part_modes)}{adapters}; {self.total_steps} steps from step {self.step}; "
                   f"world size {self.dist.world_size} on {self.device}")

    def _setup_data(self) -> MixedBatches:
        run = self.run
        collate = self.collate = collator_for(self.model, self.config.model.max_txt_len, run.strict, run.packing,
                                              run.packing_length)
        streams, ratios = {}, {}
        for name, dataset_cfg in self.config.datasets.items():
            dataset = build_dataset(name, dataset_cfg, "train", strict=run.strict)
            batch_size = batch_size_of(dataset_cfg, run)
            streams[name] = BatchStream(name, dataset, batch_size, collate, run.seed, self.dist.rank,
                                        self.dist.world_size, run.num_workers, run.group_by_length)
            ratios[name] = dataset_cfg.sample_ratio
        return MixedBatches(streams, ratios, run.seed)

    def _data_layout(self) -> dict:
        """What decides which samples each step draws; a resumed run must keep it to go on where it stopped."""
        return {"accum_grad_iters": self.run.accum_grad_iters, "world_size": self.dist.world_size,
                "batch_sizes": {name: stream.batch_size for name, stream in self.batches.streams.items()}}

    def _one_pass_steps(self) -> int:
        streams = list(self.batches.streams.values())
        if len(streams) != 1 or streams[0].streamed:
            raise InputError("run.iters_per_epoch: required for streamed or mixed data sets")
        batches, accum = streams[0].batches_per_pass(), self.run.accum_grad_iters
        steps = max(1, batches // accum)
        if batches % accum:  # nothing is dropped: the data stream runs on across epochs
            self.print(f"one pass over the data is {batches} batches, not a multiple of accum_grad_iters {accum}: an "
                       f"epoch is {steps} steps ({steps * accum} batches), the data running on into the next epoch "
                       f"(set run.iters_per_epoch to choose)")
        return steps

    # ---- train ----------------------------------------------------------------------------------
    def train(self) -> None:
        run = self.run
        self.model.train()
        data = self.batches.iterate(start_micro_step=self.step * run.accum_grad_iters)
        self.accounting = SampleAccounting(list(self.batches.streams),
                                           self.output_dir / f"skipped-rank{self.dist.rank}.jsonl",
                                           printer=tqdm.write, device=self.device)
        self.counted_from = self.step  # after a resume, the current epoch's counts start here
        self._reset_window()
        progress = tqdm(total=self.total_steps, initial=self.step, disable=not self.dist.is_main, desc="train",
                        dynamic_ncols=True)
        while self.step < self.total_steps:
            lr, grad_norm = self._train_step(data)
            progress.update(1)
            if self.step % run.log_freq == 0 or self.step == self.total_steps:
                loss = self._log_window(lr, grad_norm)
                progress.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
            epoch_end = self.step % self.iters_per_epoch == 0
            if epoch_end:
                self._end_epoch()
            if epoch_end or (run.ckpt_freq and self.step % run.ckpt_freq == 0):
                self.save()
        progress.close()

    def _train_step(self, data) -> tuple[float, float]:
        """One optimiser step over accum_grad_iters micro-batches; -> (learning rate, gradient norm)."""
        run, accum = self.run, self.run.accum_grad_iters
        # Dropout draws depend on (seed, step, rank) only: a resumed run repeats them exactly.
        torch.manual_seed(run.seed + 1_000_003 * self.dist.rank + 7_919 * (self.step + 1))
        lr = self.schedule.lr_at(self.step)
        for group in self.engine.param_groups:
            group["lr"] = lr * group["lr_mult"]
        micro_batches = [next(data) for _ in range(accum)]
        # Every answer token of the step counts the same, as in one big batch, however the tokens fall
        # across micro-batches and ranks (a mean of each batch's mean would favour short answers): a
        # micro-batch's mean loss is weighted by its tokens over the mean tokens per rank, since DDP
        # and DeepSpeed average the ranks' gradients.
        answer_tokens = [int((batch["labels"] != IGNORE_INDEX).sum()) for _, batch in micro_batches]
        tokens_per_rank = all_reduce_mean(torch.tensor(float(sum(answer_tokens)), device=self.device)).item()
        for micro, ((name, batch), tokens) in enumerate(zip(micro_batches, answer_tokens)):
            if self.model.adapters:
                self.model.adapters.use(self.adapter_of[name])
            self.accounting.add(batch)
            self.mix[name] += len(batch["ids"])
            with self.engine.accumulating(last_micro=micro == accum - 1):
                loss = self._micro_step(batch) * (tokens / max(tokens_per_rank, 1.0))
                self.engine.backward(loss)
            self.window["loss"] += loss.item()
            self.window["samples"] += len(batch["ids"])
            self.window["supervised"] += tokens
            self.window["tokens"] += batch["attention_mask"].sum().item()
        grad_norm = self.engine.step()
        self.step += 1
        self.window["steps"] += 1
        return lr, grad_norm

    def _reset_window(self) -> None:
        """Sums over the steps since the last log line."""
        self.window, self.mix, self.window_start = collections.defaultdict(float), collections.Counter(), time.perf_counter()

    def _log_window(self, lr: float, grad_norm: float) -> float:
        """Log the window's means (loss averaged over ranks) and start a new window; -> the mean loss."""
        window = self.window
        elapsed = time.perf_counter() - self.window_start
        loss_mean = all_reduce_mean(torch.tensor(window["loss"] / window["steps"], device=self.device)).item()
        metrics = {"loss": loss_mean, "lr": lr, "grad_norm": float(grad_norm),
                   "samples_per_s": window["samples"] * self.dist.world_size / elapsed,
                   "tokens_per_s": window["tokens"] * self.dist.world_size / elapsed,
                   "supervised_fraction": window["supervised"] / max(window["tokens"], 1),
                   "epoch": (self.step - 1) // self.iters_per_epoch,
                   "samples_by_dataset_rank0": dict(self.mix)}  # each micro-step draws one data set on all ranks
        if self.device.type == "cuda":  # rank 0's peak allocation since the start
            metrics["peak_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        if self.logger:
            self.logger.log(metrics, self.step)
        self._reset_window()
        return loss_mean

    def _end_epoch(self) -> None:
        """Report the epoch's sample accounting (seen, skipped, truncated per data set)."""
        epoch = self.step // self.iters_per_epoch - 1
        samples = self.accounting.end_epoch()
        first_step = max(self.counted_from, epoch * self.iters_per_epoch)
        since = f" (from step {first_step}, where this run resumed)" if first_step > epoch * self.iters_per_epoch else ""
        self.print(f"epoch {epoch} samples{since}: {SampleAccounting.describe(samples)}")
        if self.model.feature_cache is not None:
            self.print(f"epoch {epoch} {self.model.feature_cache.describe()} (rank 0)")
        if self.logger:
            self.logger.log({"epoch": epoch, "epoch_samples": samples, "counted_from_step": first_step}, self.step)

    def _micro_step(self, batch: dict) -> torch.Tensor:
        weight = 1.0
        if not batch["ids"]:  # every sample was skipped: a zero-weighted stand-in keeps DDP ranks in step
            batch, weight = self.collate.placeholder_batch(), 0.0
        with self.autocast():
            loss = self.engine.module(batch)["loss"] * weight
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.step} on rank {self.dist.rank}, "
                                     f"samples {batch['ids']} (data sets {sorted(set(batch['datasets']))})")
        return loss

    # ---- save -----------------------------------------------------------------------------------
    def save(self) -> None:
        """Every rank writes its share into a staging folder (DeepSpeed's optimiser partitions), rank 0
        the rest; then rank 0 renames it into place, so a checkpoint is either whole or absent. A write
        that fails (a full disk) removes the staging folder and names the last whole checkpoint."""
        staging = staging_folder(self.output_dir, self.step)
        try:
            if self.dist.is_main:
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(parents=True)
            barrier()
            self.engine.save(staging)
        except OSError as error:  # DeepSpeed's partitions go first: a full disk may show here
            shutil.rmtree(staging, ignore_errors=True)
            raise CheckpointWriteError(self.output_dir, staging.name, error) from error
        with self.engine.gathered(list(self.model.parameters())):
            weights = self.model.checkpoint_weights()
        if self.dist.is_main:
            state = {**self.engine.state_dict(), "step": self.step, "data_layout": self._data_layout()}
            path = save_checkpoint(self.output_dir, self.step, weights, state, self.config, staging=staging)
            self.print(f"saved {path}")
            if self.run.keep_last:
                for stale in prune_checkpoints(self.output_dir, self.run.keep_last):
                    self.print(f"removed {stale} (run.keep_last={self.run.keep_last})")
        barrier()

    def close(self) -> None:
        """Safe at any point after construction, as the caller's `finally` runs it after an error in
        setup too: the logs close and the curves are drawn only where logging was set up, and the
        process group (where one was made) is torn down whatever happens before."""
        try:
            if self.logger:
                self.logger.close()
                self.logger = None  # a second close() is a no-op
                try:
                    self.print(f"curves: {plot_curves(self.output_dir)}")
                except InputError as error:  # a run too short to have logged a loss
                    self.print(f"no curves: {error}")
        finally:
            cleanup()

    def print(self, message: str) -> None:
        """On rank 0 only (nothing before the ranks are known), between tqdm's progress lines."""
        if self.dist is not None and self.dist.is_main:
            tqdm.write(message)
