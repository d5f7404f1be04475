"""Learning-rate schedules as functions of training progress (paper Sec. 5.1: lr / 10 every 30 epochs).

The rate is computed from (epoch progress, plateau factor) at every optimiser step rather than kept in
a stateful scheduler object: a resumed run recomputes exactly the rate an uninterrupted one would use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from senet.engine.config import ScheduleConfig


def lr_factor(config: ScheduleConfig, progress: float, plateau_factor: float = 1.0) -> float:
    """Multiplier of the base learning rate after `progress` epochs (a float: 2.5 = half-way through epoch 3).

    Linear warm-up from `warmup_start` over `warmup_epochs`, then step (by whole epochs), cosine (per
    step, from 1 down to `min_lr_ratio` at the last epoch), plateau or constant.
    """
    if config.name == "step":
        epoch = math.floor(progress)
        if config.milestones is not None:
            drops = sum(epoch >= m for m in config.milestones)
        else:
            drops = epoch // config.step_every
        decay = config.gamma**drops
    elif config.name == "cosine":
        t = min(max(progress - config.warmup_epochs, 0.0) / max(config.epochs - config.warmup_epochs, 1e-12), 1.0)
        decay = config.min_lr_ratio + (1.0 - config.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))
    elif config.name == "plateau":
        decay = plateau_factor
    else:
        decay = 1.0
    if progress < config.warmup_epochs:
        decay *= config.warmup_start + (1.0 - config.warmup_start) * progress / config.warmup_epochs
    return decay


@dataclass
class Plateau:
    """The plateau schedule's state: multiply the rate by gamma after `patience` epochs without a new best."""

    factor: float = 1.0
    best: float = math.inf
    bad_epochs: int = 0

    def update(self, config: ScheduleConfig, val_loss: float) -> None:
        if val_loss < self.best:
            self.best, self.bad_epochs = val_loss, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= config.patience:
            self.factor *= config.gamma
            self.bad_epochs = 0

    def state_dict(self) -> dict[str, float]:
        return {"factor": self.factor, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.factor, self.best, self.bad_epochs = float(state["factor"]), float(state["best"]), int(state["bad_epochs"])
