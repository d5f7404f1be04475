"""Learning-rate schedules as functions of training progress (paper Sec. 5.1: lr / 10 every 30 epochs).

The rate is computed from (epoch progress, plateau factor) at every optimiser step rather than kept in
a stateful scheduler object: a resumed run recomputes exactly the rate an uninterrupted one would use.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection
from dataclasses import dataclass

from senet.engine.config import ScheduleConfig

# A warm-up that a shorter run keeps at most: this share of the run's epochs.
WARMUP_CAP = 0.1


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


def fit_to_epochs(
    recipe: ScheduleConfig, epochs: int, *, user_set: Collection[str] = ()
) -> tuple[ScheduleConfig, str | None]:
    """The recipe's schedule stretched to `epochs` (and a line saying what changed, or None).

    A recipe's step milestones are for its own length (paper-cifar: 82, 123 of 164 epochs); for another
    `--epochs` they scale with it, rounded half up (82 x 15/164 = 7.5 -> 8, 123 x 15/164 = 11.25 -> 11),
    and so does `step_every` (30 of 100 -> 3 of 10). The warm-up keeps its length in epochs but at most
    `WARMUP_CAP` of the run. Settings named in `user_set` (ScheduleConfig field names) are left as given.
    """
    if epochs == recipe.epochs:
        return dataclasses.replace(recipe, epochs=epochs), None

    def scaled(value: float) -> int:
        return max(1, math.floor(value * epochs / recipe.epochs + 0.5))

    changes: dict[str, object] = {"epochs": epochs}
    said = []
    if recipe.name == "step" and recipe.milestones is not None and "milestones" not in user_set:
        changes["milestones"] = tuple(scaled(m) for m in recipe.milestones)
        said.append(f"step milestones {_listed(recipe.milestones)} -> {_listed(changes['milestones'])}")
    elif recipe.name == "step" and recipe.milestones is None and "step_every" not in user_set and "milestones" not in user_set:
        changes["step_every"] = scaled(recipe.step_every)
        said.append(f"a step every {recipe.step_every} -> {changes['step_every']} epochs")
    cap = round(WARMUP_CAP * epochs, 12)  # 0.3 for 3 epochs, not 0.1 * 3 = 0.30000000000000004
    if recipe.warmup_epochs > cap and "warmup_epochs" not in user_set:
        changes["warmup_epochs"] = cap
        said.append(f"warm-up {recipe.warmup_epochs:g} -> {cap:g} epochs (at most {WARMUP_CAP:.0%} of the run)")
    note = None
    if said:
        note = f"schedule fitted to {epochs} epochs (the recipe's is {recipe.epochs}): " + "; ".join(said)
    return dataclasses.replace(recipe, **changes), note  # type: ignore[arg-type]


def _listed(values: tuple[int, ...]) -> str:
    return "/".join(str(v) for v in values)


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
