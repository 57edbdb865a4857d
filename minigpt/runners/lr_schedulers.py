"""Learning-rate schedules as pure functions of the optimiser step, so resuming needs only the step."""
from __future__ import annotations

import math

from minigpt.common.registry import register_lr_scheduler


class WarmupSchedule:
    """Linear warmup from warmup_lr to init_lr over warmup_steps; a subclass says what follows."""

    def __init__(self, init_lr: float, min_lr: float, warmup_lr: float, warmup_steps: int, total_steps: int,
                 steps_per_epoch: int, decay_rate: float | None = None):
        self.init_lr, self.min_lr, self.warmup_lr = init_lr, min_lr, warmup_lr
        self.warmup_steps, self.total_steps = warmup_steps, max(total_steps, 1)
        self.steps_per_epoch, self.decay_rate = max(steps_per_epoch, 1), decay_rate

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_lr + (self.init_lr - self.warmup_lr) * step / self.warmup_steps
        return self.after_warmup(step)

    def after_warmup(self, step: int) -> float:
        raise NotImplementedError


@register_lr_scheduler("linear_warmup_cosine_lr")
class LinearWarmupCosineLR(WarmupSchedule):
    """Linear warmup, then cosine from init_lr towards min_lr over the run."""

    def after_warmup(self, step: int) -> float:
        progress = step / self.total_steps
        return self.min_lr + 0.5 * (self.init_lr - self.min_lr) * (1 + math.cos(math.pi * progress))


@register_lr_scheduler("linear_warmup_step_lr")
class LinearWarmupStepLR(WarmupSchedule):
    """Linear warmup, then init_lr * decay_rate ** epoch (decay_rate 0.1 unless set), never below min_lr."""

    def after_warmup(self, step: int) -> float:
        decay_rate = 0.1 if self.decay_rate is None else self.decay_rate
        return max(self.min_lr, self.init_lr * decay_rate ** (step // self.steps_per_epoch))
