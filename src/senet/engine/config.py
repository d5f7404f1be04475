"""A training run's configuration as frozen dataclasses; recipes and flags both map onto these.

`RunConfig.from_dict` checks every key (unknown ones are errors with a suggestion) and coerces YAML
values to the declared types; `to_dict` gives back plain YAML/JSON data, which is what a run saves as
`config.yaml` and what `--resume` reads.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from senet.errors import ConfigError, check_choice, did_you_mean
from senet.options import AMP_MODES, OPTIMIZERS, SCHEDULES  # (the CLI's flags offer exactly these)
from senet.weights.record import plain

TRAIN_TRANSFORMS = ("random_resized_crop", "pad_crop", "resize")


@dataclass(frozen=True)
class ModelConfig:
    """Which network: a registered model name and its create_model keywords (SE variant, classes...).

    pretrained: a weights file to start from (any file `senet.load_model` reads); source: the library that
    wrote it ("auto": from its keys). A run records the model, keywords and source the file resolved to.
    add_se: with pretrained, add SE to its plain network (`senet.add_se`) with this init ("identity": the
    network starts computing what the pretrained one did; "default"); the run's model is the SE twin.
    """

    name: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: str | None = None
    source: str = "auto"
    add_se: str | None = None


@dataclass(frozen=True)
class DataConfig:
    """Dataset and preprocessing (Sec. 5.1 for ImageNet, Sec. 6.1 for CIFAR).

    input_size: training crop; None means the data's own size (32 for CIFAR, 8 for digits) or else the
    model's default (224). Evaluation resizes the shorter side to input_size / eval_crop_fraction.
    mean/std: None means the dataset's statistics (ImageNet's for folders).
    """

    spec: str | None = None
    input_size: int | None = None
    train_transform: str = "random_resized_crop"
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    pad: int = 4
    flip: bool = True
    eval_crop_fraction: float = 0.875
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    workers: int = 4
    skip_bad_images: bool = False


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and loss. `lr` is the rate for a global batch of `lr_batch` images, scaled linearly to the
    actual global batch (batch_size x accum_steps x processes); lr_batch None uses `lr` as given."""

    name: str = "sgd"
    lr: float = 0.6
    lr_batch: int | None = 1024
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    decay_norm_and_bias: bool = True
    label_smoothing: float = 0.0
    grad_clip: float | None = None


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule over `epochs`: step (x gamma every `step_every` epochs or at `milestones`),
    cosine (down to min_lr_ratio x lr), plateau (x gamma when the validation loss stalls `patience` epochs) or constant;
    preceded by a linear warm-up from warmup_start x lr over `warmup_epochs`."""

    name: str = "step"
    epochs: int = 100
    warmup_epochs: float = 0.0
    warmup_start: float = 0.0
    step_every: int = 30
    milestones: tuple[int, ...] | None = None
    gamma: float = 0.1
    min_lr_ratio: float = 0.0
    patience: int = 10


@dataclass(frozen=True)
class TrainConfig:
    """How the loop runs. batch_size is per process; amp is none, bf16 or fp16 (fp16 with a grad scaler)."""

    batch_size: int = 256
    accum_steps: int = 1
    seed: int = 0
    device: str = "auto"
    amp: str = "none"
    channels_last: bool = False
    compile: bool = False
    ema_decay: float | None = None
    sync_bn: bool = False
    deterministic: bool = False
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    tensorboard: bool = False
    log_every: int = 50


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run."""

    recipe: str = "custom"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        validate(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return _build(cls, data, "")

    def to_dict(self) -> dict[str, Any]:
        return plain(dataclasses.asdict(self))

    def replace(self, overrides: dict[str, Any]) -> RunConfig:
        """A copy with dotted keys replaced, e.g. {"optim.lr": 0.1, "model.kwargs.reduction": 8}."""
        return RunConfig.from_dict(apply_overrides(self.to_dict(), overrides))


def validate(config: RunConfig) -> None:
    """Raise ConfigError for values no run can use."""
    check_choice("optimizer", config.optim.name, OPTIMIZERS)
    check_choice("schedule", config.schedule.name, SCHEDULES)
    check_choice("amp", config.train.amp, AMP_MODES)
    check_choice("train_transform", config.data.train_transform, TRAIN_TRANSFORMS)
    positive = {
        "train.batch_size": config.train.batch_size,
        "train.accum_steps": config.train.accum_steps,
        "schedule.epochs": config.schedule.epochs,
        "train.keep_checkpoints": config.train.keep_checkpoints,
        "train.log_every": config.train.log_every,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")
    if config.optim.lr < 0 or config.schedule.warmup_epochs < 0 or config.data.workers < 0:
        raise ConfigError("lr, warmup_epochs and workers must not be negative")
    if not 0 <= config.optim.label_smoothing < 1:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {config.optim.label_smoothing}")
    if config.train.ema_decay is not None and not 0 < config.train.ema_decay < 1:
        raise ConfigError(f"ema_decay must be in (0, 1), e.g. 0.9998, got {config.train.ema_decay}")
    if config.data.input_size is not None and config.data.input_size < 1:
        raise ConfigError(f"input_size must be >= 1, got {config.data.input_size}")
    if (config.data.mean is None) != (config.data.std is None):
        raise ConfigError("give both data.mean and data.std, or neither")


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys of a nested dict (a copy); unknown keys are caught later by `RunConfig.from_dict`."""
    out = plain(data)
    for dotted, value in overrides.items():
        *parents, last = dotted.split(".")
        node = out
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[last] = plain(value)
    return out


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"setting {path or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            where = f"{path}.{key}" if path else key
            raise ConfigError(f"unknown setting {where!r}{did_you_mean(str(key), names)}; valid here: {', '.join(names)}")
        kwargs[key] = _coerce(hints[key], value, f"{path}.{key}" if path else key)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, path: str) -> Any:
    """`value` as the declared type `hint` (int -> float, list -> tuple), or a ConfigError."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is not type(None):
                try:
                    return _coerce(option, value, path)
                except ConfigError:
                    continue
        raise ConfigError(f"setting {path} got {value!r}, which is not a {hint}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"setting {path} takes a list, got {value!r}")
        args = typing.get_args(hint)
        item = args[0]
        if len(args) == 2 and args[1] is not Ellipsis or len(args) > 2:
            if len(value) != len(args):
                raise ConfigError(f"setting {path} takes {len(args)} values, got {list(value)}")
            return tuple(_coerce(a, v, path) for a, v in zip(args, value))
        return tuple(_coerce(item, v, path) for v in value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"setting {path} takes a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"setting {path} takes true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"setting {path} takes an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"setting {path} takes a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"setting {path} takes a string, got {value!r}")
    return value
