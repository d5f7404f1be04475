"""The training loop (paper Sec. 5.1): synchronous SGD over one process or many (torchrun / DDP).

One code path for a laptop and a cluster: a single process is world size 1. Features beyond the
paper's recipe are options of the same loop: label smoothing, warm-up, step / cosine / plateau
schedules, gradient accumulation, bf16 or fp16 autocast (fp16 with a gradient scaler), channels_last,
torch.compile, an EMA of the weights, SyncBN, a deterministic mode.

Exact resume: a checkpoint holds the weights, the optimiser, scaler and EMA state, the RNG states of
every process (torch, numpy, python), the epoch and step within it, and the epoch's running sums.
Data order and augmentation are functions of (seed, epoch, sample index) and the learning rate a
function of progress, so a run killed at any moment and resumed ends with the same weights, bit for bit
(on the same machine, with the same number of threads and processes).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from senet.data import AugmentedDataset, EvalSampler, EvalTransform, Normalize, TrainSampler, TrainTransform
from senet.data import make_loader, open_data
from senet.data.spec import Splits
from senet.engine import distributed as dist_utils
from senet.engine.config import RunConfig
from senet.engine.distributed import DistEnv
from senet.engine.ema import ModelEma
from senet.engine.evaluate import EvalResult, autocast, check_input_size, device_batches, evaluate
from senet.engine.recipes import resolve_config
from senet.engine.schedule import Plateau, lr_factor
from senet.errors import ConfigError, FileSystemError, SenetError, shown
from senet.interop.load import build_network, recognise_file
from senet.models import create_model
from senet.weights.cache import find_weights, is_model_name
from senet.weights.checkpoint import (
    CHECKPOINTS,
    Checkpoint,
    atomic_write,
    checkpoint_dirs,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_weights,
)
from senet.weights.lock import FolderInUse, FolderLock
from senet.weights.record import CheckpointRecord, plain
from senet.weights.state import load_strict

CONFIG_FILE = "config.yaml"
FINAL_WEIGHTS = "model.safetensors"
METRICS_FILE = "metrics.jsonl"
AUX_LOSS_WEIGHT = 0.4


class TrainingDiverged(SenetError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during training; the message names the checkpoint that survived and the resume command."""


@dataclass
class TrainResult:
    """What a finished run produced."""

    output: Path
    history: list[dict[str, Any]]
    model: nn.Module
    record: CheckpointRecord
    train_seconds: float = 0.0
    train_images: int = 0
    splits: Splits | None = field(default=None, repr=False)

    @property
    def images_per_s(self) -> float:
        return self.train_images / self.train_seconds if self.train_seconds else 0.0

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}

    def summary(self) -> dict[str, Any]:
        """The run's result: final validation errors and loss, epochs, steps, time and where the weights are."""
        final = self.final
        return {
            "model": self.record.model,
            "data": self.record.data,
            "output": str(self.output),
            "weights": str(self.output / "model.safetensors"),
            "epochs": final.get("epoch", 0),
            "steps": final.get("step", 0),
            **{key: final.get(key) for key in ("val_top1_err", "val_top5_err", "val_loss", "train_loss")},
            "train_seconds": round(self.train_seconds, 3),
            "images_per_s": round(self.images_per_s, 1),
        }

    def summary_line(self) -> str:
        """`summary()` as one line for people."""
        s = self.summary()
        if not self.history:
            return f"{s['model']}: no epoch trained; weights: {s['weights']}"
        return (
            f"{s['model']} on {s['data']}: top-1 error {s['val_top1_err']:.2f}%, top-5 error {s['val_top5_err']:.2f}%, "
            f"val loss {s['val_loss']:.4f} after {s['epochs']} epochs ({s['steps']} steps, {s['train_seconds']:.0f} s "
            f"training); weights: {s['weights']}"
        )


def prepare_config(
    recipe: str | None, overrides: dict[str, Any], resume: str | Path | None = None, *, notes: list[str] | None = None
) -> tuple[RunConfig, list[str]]:
    """The run's config and a list of changes: the recipe with `overrides`, or for `resume` the run's saved
    config.yaml with `overrides` on top (torchrun restarts repeat the same flags, which change nothing).
    A new run's schedule follows an overridden epoch count; the line saying how goes to `notes`."""
    saved = Path(resume) / CONFIG_FILE if resume is not None else None
    if saved is not None and saved.is_file():
        base = RunConfig.from_dict(yaml.safe_load(saved.read_text()))
        config = base.replace(overrides)
        before, after = flatten_config(base.to_dict()), flatten_config(config.to_dict())
        changes = [f"{key}: {shown(before.get(key))} -> {shown(after.get(key))}" for key in after
                   if before.get(key) != after.get(key)]
        return config, changes
    return resolve_config(recipe or "paper-imagenet", overrides, notes=notes), []


def flatten_config(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and not (prefix + key).endswith("kwargs"):
            out |= flatten_config(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value
    return out


def default_output(config: RunConfig) -> Path:
    data = (config.data.spec or "data").split(":")[0]
    return Path("runs") / f"{config.model.name}-{data}-{datetime.now():%Y%m%d-%H%M%S}"


# ---------------------------------------------------------------------------------------------------
# RNG states as plain tensors and numbers, so the trainer state loads with weights_only=True.


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "cached": cached},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"], numpy["cached"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------------


class Trainer:
    """Train `config` into the folder `output` (continuing the run there if `resume`)."""

    def __init__(
        self,
        config: RunConfig,
        output: str | Path,
        *,
        resume: bool = False,
        resume_from: str | Path | None = None,
        overwrite: bool = False,
        quiet: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.output = Path(output)
        self.resume = resume or resume_from is not None
        self.resume_from = Path(resume_from) if resume_from is not None else None
        self.overwrite = overwrite
        self.quiet = quiet
        # Without a live progress bar (output to a log file or a scheduler), a line every log_every steps.
        self.step_lines = not sys.stdout.isatty()
        self.env = DistEnv.from_environ()
        self._log = log or (lambda line: print(line, flush=True))

    def log(self, line: str) -> None:
        if self.env.is_main and not self.quiet:
            self._log(line)

    def warn(self, line: str) -> None:
        if self.env.is_main:
            print(f"senet: warning: {line}", file=sys.stderr, flush=True)

    # -- setup -----------------------------------------------------------------------------------

    def setup(self) -> None:
        cfg, env = self.config, self.env
        cfg = self._resolve_pretrained()
        if cfg.model.name is None:
            raise ConfigError(f"recipe {cfg.recipe} names no model; pass --model (e.g. --model se_resnet50)")
        if cfg.data.spec is None:
            raise ConfigError("no data given; pass --data (digits, synthetic, folder:PATH, cifar10:PATH or cifar100:PATH)")
        self.device = dist_utils.resolve_device(cfg.train.device, env)
        dist_utils.init_process_group(env, self.device)
        self._set_determinism()
        if cfg.train.amp == "fp16" and self.device.type == "cpu":
            raise ConfigError("fp16 autocast is for GPUs; on the CPU use --amp bf16")

        kwargs = dict(cfg.model.kwargs)
        with torch.device("meta"):
            shape_model = create_model(cfg.model.name, **kwargs)
        model_default = int(shape_model.default_input_size[-1])
        self.splits = open_data(cfg.data.spec, default_size=cfg.data.input_size or model_default)
        train_set, val_set = self.splits.train, self.splits.val
        self.input_size = cfg.data.input_size or train_set.native_size or model_default
        check_input_size(shape_model, cfg.model.name, self.input_size)
        self.classes = list(self.splits.classes)
        if len(self.classes) < 2:  # one class: the loss is 0 from the first step and the error 0%, meaning nothing
            found = f"one class ({self.classes[0]})" if self.classes else "no classes"
            raise ConfigError(f"{cfg.data.spec} has {found}; a classifier needs at least two: give the data a folder "
                              "per class (train/CLASS/*.jpg)")
        kwargs.setdefault("num_classes", len(self.classes))
        kwargs.setdefault("in_chans", self.splits.channels)
        if kwargs["num_classes"] != len(self.classes):
            raise ConfigError(f"--num-classes {kwargs['num_classes']} but {cfg.data.spec} has {len(self.classes)} classes")
        if kwargs["in_chans"] != self.splits.channels:
            raise ConfigError(f"--in-chans {kwargs['in_chans']} but {cfg.data.spec} has {self.splits.channels}-channel images")
        self.model_kwargs = kwargs
        self.mean = tuple(cfg.data.mean or train_set.mean)
        self.std = tuple(cfg.data.std or train_set.std)
        if len(self.mean) != self.splits.channels:
            raise ConfigError(f"data.mean has {len(self.mean)} values but the images have {self.splits.channels} channels")

        # The model is created from the seed alone, identically in every process.
        seed_everything(cfg.train.seed)
        self.model = self._create_model(kwargs).to(self.device)
        # Dropout and other randomness in training differ between processes.
        seed_everything(cfg.train.seed + env.rank)

        self._build_loaders(train_set, val_set)
        self._build_model_wrappers()
        self._build_optimizer()
        self.record = CheckpointRecord(
            model=cfg.model.name,
            kwargs=plain(kwargs),
            classes=tuple(self.classes),
            channels=self.splits.channels,
            mean=tuple(self.mean),
            std=tuple(self.std),
            input_size=self.input_size,
            eval_crop_fraction=cfg.data.eval_crop_fraction,
            data=str(self.splits.spec),
            recipe=cfg.recipe,
        )
        # The saved config records what the defaults resolved to, so a resume derives nothing anew.
        self.config = cfg.replace({"data.input_size": self.input_size, "data.mean": self.mean, "data.std": self.std})

    def _resolve_pretrained(self) -> RunConfig:
        """With --pretrained (and no checkpoint to resume from): read the file and record the model, keywords
        and source it resolves to in the run's config, so a resume rebuilds the network without it."""
        self.pretrained = None
        cfg = self.config
        if cfg.model.pretrained is None or (self.resume and checkpoint_dirs(self.output)):
            return cfg
        source = cfg.model.source
        if not Path(cfg.model.pretrained).expanduser().exists() and is_model_name(cfg.model.pretrained):
            found = find_weights(cfg.model.pretrained)  # a model name: the weights already on this machine
            self.log(f"pretrained weights: {cfg.model.pretrained} found at {found.path}")
            cfg = cfg.replace({"model.pretrained": str(found.path)})
            source = source if source not in (None, "auto") else found.wanted.source
        self.pretrained, _ = recognise_file(cfg.model.pretrained, source=source or "auto", model=cfg.model.name)
        kwargs = {k: v for k, v in self.pretrained.model_kwargs.items() if k not in ("num_classes", "in_chans")}
        name = self.pretrained.model_name
        if cfg.model.add_se is not None:
            from senet.models import is_se_model, se_twin

            if is_se_model(name) or se_twin(name) is None:
                raise ConfigError(f"--add-se adds SE to a plain network; {cfg.model.pretrained} holds {name}"
                                  + (", which has SE already" if is_se_model(name) else ", which has no SE twin in senet"))
            name = se_twin(name)
        self.config = cfg.replace({"model.name": name, "model.source": self.pretrained.source,
                                   "model.kwargs": kwargs | dict(cfg.model.kwargs)})
        return self.config

    def _create_model(self, kwargs: dict[str, Any]) -> nn.Module:
        """The network: fresh, or the --pretrained weights with the classifier and input convolution adapted."""
        if self.pretrained is None:
            return create_model(self.config.model.name, **kwargs)
        extra = {k: v for k, v in kwargs.items() if k not in ("num_classes", "in_chans")}
        model, notes = build_network(self.pretrained, Path(self.config.model.pretrained), num_classes=kwargs["num_classes"],
                                     in_chans=kwargs["in_chans"], **extra)
        self.log(f"pretrained weights: {self.pretrained.describe()}")
        for note in notes:
            self.log(f"pretrained weights: {note}")
        if self.config.model.add_se is not None:
            from senet.interop.retrofit import add_se

            add_se(model, init=self.config.model.add_se, input_size=(kwargs["in_chans"], self.input_size, self.input_size))
            with torch.device("meta"):  # the run's model (its config, its saved weights) is the SE twin
                twin = create_model(self.config.model.name, **kwargs).state_dict()
            if {k: v.shape for k, v in twin.items()} != {k: v.shape for k, v in model.state_dict().items()}:
                raise ConfigError(f"--add-se on {self.pretrained.model_name} gives a network other than "
                                  f"{self.config.model.name}; add SE in Python (senet.add_se) instead")
            self.log(f"pretrained weights: {model.se_report.summary} (init={self.config.model.add_se})")
        return model

    def _set_determinism(self) -> None:
        deterministic = self.config.train.deterministic
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        if torch.are_deterministic_algorithms_enabled() != deterministic:  # the call imports torch._dynamo: seconds
            torch.use_deterministic_algorithms(deterministic)
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = self.device.type == "cuda" and not deterministic

    def _build_loaders(self, train_set: Any, val_set: Any) -> None:
        cfg, env = self.config, self.env
        data = cfg.data
        train_transform = TrainTransform(
            self.input_size, data.train_transform, data.scale, data.ratio, data.pad, data.flip, mode=train_set.pil_mode
        )
        eval_transform = EvalTransform(self.input_size, data.eval_crop_fraction, mode=val_set.pil_mode)
        self.sampler = TrainSampler(len(train_set), seed=cfg.train.seed, rank=env.rank, world_size=env.world_size)
        batch, accum = cfg.train.batch_size, cfg.train.accum_steps
        self.steps_per_epoch = self.sampler.per_rank // batch // accum
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"{len(train_set)} training images over {env.world_size} process(es) do not fill one step of "
                f"batch {batch} x {accum} accumulation steps; lower --batch-size"
            )
        pin = self.device.type == "cuda"
        self.train_loader = make_loader(
            AugmentedDataset(train_set, train_transform, cfg.train.seed),
            self.sampler,
            batch_size=batch,
            workers=data.workers,
            drop_last=True,
            pin_memory=pin,
        )
        self.val_loader = make_loader(
            AugmentedDataset(val_set, eval_transform),
            EvalSampler(len(val_set), rank=env.rank, world_size=env.world_size),
            batch_size=batch,
            workers=data.workers,
            pin_memory=pin,
        )
        self.normalize = Normalize(self.mean, self.std, self.device, channels_last=cfg.train.channels_last)

    def _build_model_wrappers(self) -> None:
        cfg, env = self.config, self.env
        if cfg.train.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if cfg.train.sync_bn and env.distributed:
            if self.device.type != "cuda":
                raise ConfigError("--sync-bn needs GPUs (torch's SyncBatchNorm has no CPU implementation); drop it on CPU")
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        elif cfg.train.sync_bn:
            self.log("note: --sync-bn has no effect in a single process")
        self.ema = ModelEma(self.model, cfg.train.ema_decay) if cfg.train.ema_decay else None
        self.train_model: nn.Module = self.model
        self.compiling = bool(cfg.train.compile)  # until the first step has run (and compiled)
        if cfg.train.compile:
            self.train_model = torch.compile(self.train_model)
            self.log("torch.compile: the first training step compiles the network (a minute or more on a CPU; "
                     "the steps after it are fast)")
        if env.distributed:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.train_model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )

    def _build_optimizer(self) -> None:
        cfg, env = self.config, self.env
        optim = cfg.optim
        self.global_batch = cfg.train.batch_size * cfg.train.accum_steps * env.world_size
        # Linear scaling (Goyal et al.): the recipe's lr is for lr_batch images, e.g. 0.6 for 1024 (Sec. 5.1).
        self.base_lr = optim.lr * self.global_batch / optim.lr_batch if optim.lr_batch else optim.lr
        decay, no_decay = [], []
        for param in self.model.parameters():
            (no_decay if param.ndim <= 1 and not optim.decay_norm_and_bias else decay).append(param)
        groups = [{"params": decay, "weight_decay": optim.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        if optim.name == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                groups, lr=self.base_lr, momentum=optim.momentum, nesterov=optim.nesterov
            )
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=self.base_lr)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.train.amp == "fp16")
        self.criterion = nn.CrossEntropyLoss(label_smoothing=optim.label_smoothing)
        self.plateau = Plateau()

    # -- state -----------------------------------------------------------------------------------

    def _reset_running(self) -> None:
        self.running = {"loss_sum": 0.0, "steps": 0, "correct": 0, "images": 0, "seconds": 0.0, "bad": 0}
        # Each step's (summed loss, correct count) as device tensors, read into `running` by `_read_pending`:
        # reading a value from the device waits for it, so this happens at log intervals and checkpoints only.
        self.pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _read_pending(self) -> None:
        """Add the pending steps' losses and correct counts to the running sums (one wait for the device,
        one all-reduce); a loss that became NaN or infinite in any process stops the run."""
        if not self.pending:
            return
        accum, world = self.config.train.accum_steps, self.env.world_size
        losses = (torch.stack([loss for loss, _ in self.pending]).double() / accum / world).tolist()
        losses = dist_utils.all_reduce_sum(losses, self.device)
        correct = int(torch.stack([count for _, count in self.pending]).sum())
        first = self.step_in_epoch - len(self.pending) + 1
        self.pending = []
        for offset, value in enumerate(losses):
            if not math.isfinite(value):
                self._diverged(value, step=first + offset)
        for value in losses:  # in step order: the same sum as adding each step's loss as it comes
            self.running["loss_sum"] += value
        self.running["correct"] += correct
        self.last_loss = losses[-1]

    def trainer_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "plateau": self.plateau.state_dict(),
            "running": dict(self.running),
            "history": list(self.history),
            "rng": dist_utils.all_gather_objects(rng_state(), self.device),
            "world_size": self.env.world_size,
            "config": self.config.to_dict(),
        }

    def check_resumable(self, checkpoint: Checkpoint) -> None:
        """ConfigError, naming the difference, if the checkpoint's network or classes are not this run's."""
        saved, ours = checkpoint.record, self.record
        fix = (f"start a new run with another --output, or fine-tune its weights in a new run with "
               f"--pretrained {checkpoint.path / 'model.safetensors'}")
        where = f"{self.output} was trained"
        if saved is None or saved.model != ours.model:
            raise ConfigError(f"{where} as {saved.model if saved else None}, not {ours.model}; {fix}")
        if saved.classes is not None and len(saved.classes) != len(self.classes):
            raise ConfigError(f"{where} on {len(saved.classes)} classes, but {self.splits.spec} has {len(self.classes)}; {fix}")
        if saved.channels not in (None, self.splits.channels):
            raise ConfigError(f"{where} on {saved.channels}-channel images, but {self.splits.spec} has "
                              f"{self.splits.channels}; {fix}")
        kwargs = saved.kwargs
        changed = sorted(k for k in set(kwargs) | set(ours.kwargs) if kwargs.get(k) != ours.kwargs.get(k))
        if changed:
            shown = lambda value: "default" if value is None else value  # noqa: E731
            detail = ", ".join(f"{k} {shown(kwargs.get(k))} -> {shown(ours.kwargs.get(k))}" for k in changed)
            raise ConfigError(f"{where} with other model settings ({detail}); {fix}")

    def load_state(self, checkpoint: Checkpoint) -> None:
        self.check_resumable(checkpoint)
        load_strict(self.model, checkpoint.model, f"the weights in {checkpoint.path}", f"this run's {self.record.model}",
                    "start a new run with another --output")
        if self.ema is not None:
            if checkpoint.ema is None:
                raise ConfigError(f"{checkpoint.path} has no EMA weights; resume without --ema-decay")
            load_strict(self.ema.module, checkpoint.ema, f"the EMA weights in {checkpoint.path}",
                        f"this run's {self.record.model}", "start a new run with another --output")
        state = checkpoint.trainer
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.plateau.load_state_dict(state["plateau"])
        self.epoch, self.step_in_epoch, self.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        self.running = dict(state["running"])
        self.history = list(state["history"])
        states = state["rng"]
        set_rng_state(states[self.env.rank] if len(states) == self.env.world_size else states[0])
        if state.get("world_size", 1) != self.env.world_size:
            self.log(f"note: the run was saved by {state.get('world_size')} processes and resumes with {self.env.world_size}; "
                     "the data order of the interrupted epoch changes")

    def save(self) -> Path | None:
        """Write a checkpoint of the current state (rank 0 writes; every rank takes part in gathering RNG states).

        Weights that overflowed in the last update (a finite loss, then inf or NaN weights) stop the run
        here, before they could replace the last good checkpoint.
        """
        self._read_pending()
        tensors = [t for t in self.model.state_dict().values() if t.is_floating_point()]  # weights and BN statistics
        finite = torch.stack([torch.isfinite(t).all() for t in tensors]).all()
        if not bool(finite):
            self._diverged("finite, but the weights overflowed to inf/nan")
        state = self.trainer_state()
        path = None
        if self.env.is_main:
            path = save_checkpoint(
                self.output,
                self.global_step,
                model=self.model.state_dict(),
                trainer=state,
                record=self.record.replace(epoch=self.epoch, step=self.global_step),
                ema=self.ema.state_dict() if self.ema else None,
                keep=self.config.train.keep_checkpoints,
            )
        return path

    def _write_metrics(self) -> None:
        if not self.env.is_main:
            return
        text = "".join(json.dumps(row) + "\n" for row in self.history)
        atomic_write(self.output / METRICS_FILE, lambda temp: temp.write_text(text))

    # -- the loop --------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        deterministic = torch.are_deterministic_algorithms_enabled()
        self.lock = FolderLock(self.output, fix="wait for it to finish, or train into another --output")
        try:
            self.setup()
            self._lock()
            return self._fit()
        finally:
            self.lock.release()
            if torch.are_deterministic_algorithms_enabled() != deterministic:
                torch.use_deterministic_algorithms(deterministic)
            dist_utils.shutdown()

    def _lock(self) -> None:
        """One writer per run folder: take its lock before anything is written (under torchrun rank 0 takes it
        and every process stops alike if another run holds it)."""
        failure = None
        if self.env.is_main:
            try:
                self.lock.acquire()
            except (FolderInUse, FileSystemError) as error:
                failure = [isinstance(error, FolderInUse), str(error)]
        failure = dist_utils.all_gather_objects(failure, self.device)[0]
        if failure is not None:
            in_use, message = failure
            raise (FolderInUse if in_use else FileSystemError)(message)

    def _fit(self) -> TrainResult:
        cfg, env = self.config, self.env
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.history: list[dict[str, Any]] = []
        self._reset_running()
        if env.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            for leftover in (self.output / CHECKPOINTS).glob(".tmp-*"):  # from a process killed mid-write
                shutil.rmtree(leftover, ignore_errors=True)
        dist_utils.barrier()
        if self.resume:
            if self.resume_from is not None:
                checkpoint: Checkpoint | None = load_checkpoint(self.resume_from)
            else:
                checkpoint = latest_checkpoint(self.output, warn=self.warn)
            if checkpoint is None:
                self.log(f"no checkpoint in {self.output} yet: starting the run there")
            else:
                self.load_state(checkpoint)
                if self.resume_from is not None:
                    self._set_aside_newer(checkpoint.path)
                self.log(f"resuming from {checkpoint.path} (epoch {self.epoch + 1}, step {self.step_in_epoch} of {self.steps_per_epoch})")
        elif checkpoint_dirs(self.output) or (self.output / FINAL_WEIGHTS).is_file():
            if not self.overwrite:
                raise ConfigError(f"{self.output} already holds a run; continue it with --resume {self.output}, "
                                  "choose another --output, or replace it with --overwrite")
            if env.is_main:
                clear_run(self.output)
            dist_utils.barrier()
        if env.is_main:
            atomic_write(self.output / CONFIG_FILE, lambda t: t.write_text(yaml.safe_dump(self.config.to_dict(), sort_keys=False)))
            self._write_metrics()
        self._log_header()
        writer = self._tensorboard()

        try:
            while self.epoch < cfg.schedule.epochs:
                self._train_epoch()
                row = self._end_epoch()
                if writer is not None:
                    for key, value in row.items():
                        if isinstance(value, (int, float)) and key != "epoch":
                            writer.add_scalar(key, value, row["epoch"])
        except KeyboardInterrupt:
            raise TrainingInterrupted(self._interrupted()) from None
        finally:
            if writer is not None:
                writer.close()
        return self._finish()

    def _interrupted(self) -> str:
        """What survived a Ctrl-C, and the command that continues the run."""
        kept = checkpoint_dirs(self.output)
        if kept:
            saved = kept[0].name[len("step-"):].lstrip("0") or "0"
            survived = f"the newest checkpoint is {kept[0]} (after step {saved}; the steps since are lost)"
        else:
            survived = "no checkpoint was written yet"
        launcher = f"torchrun --nproc_per_node {self.env.world_size} -m senet" if self.env.distributed else "senet"
        return f"{survived}\nresume with: {launcher} train --resume {shlex.quote(str(self.output))}"

    def _set_aside_newer(self, chosen: Path) -> None:
        """Resuming from an older checkpoint: rename the newer ones out of the run (kept, not resumed from)."""
        if not self.env.is_main:
            return
        for path in checkpoint_dirs(self.output):
            if path.name > chosen.name:
                aside = path.with_name(f"abandoned-{path.name}")
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(path, aside)
                self.log(f"note: set {path.name} aside as {aside} (it is newer than the checkpoint resumed from)")

    def _log_header(self) -> None:
        cfg, env = self.config, self.env
        params = sum(p.numel() for p in self.model.parameters())
        self.log(
            f"{cfg.model.name} ({params / 1e6:.2f}M params) on {self.splits.spec}: {len(self.splits.train)} train / "
            f"{len(self.splits.val)} val images, {len(self.classes)} classes, input {self.input_size}"
        )
        self.log(
            f"recipe {cfg.recipe}: {cfg.schedule.epochs} epochs x {self.steps_per_epoch} steps, global batch {self.global_batch} "
            f"({env.world_size} process(es) on {self.device.type}), lr {self.base_lr:g}, {cfg.schedule.name} schedule; "
            f"output {self.output}"
        )

    def _tensorboard(self) -> Any:
        if not (self.config.train.tensorboard and self.env.is_main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--tensorboard needs the tensorboard package: pip install 'senet[tensorboard]'") from None
        return SummaryWriter(str(self.output / "tensorboard"))

    def _set_lr(self) -> float:
        progress = self.epoch + self.step_in_epoch / self.steps_per_epoch
        lr = self.base_lr * lr_factor(self.config.schedule, progress, self.plateau.factor)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _train_epoch(self) -> None:
        cfg, env = self.config, self.env
        accum = cfg.train.accum_steps
        self.sampler.set_epoch(self.epoch, start=self.step_in_epoch * accum * cfg.train.batch_size)
        self.train_model.train()
        progress = _progress(self.steps_per_epoch, self.step_in_epoch, f"epoch {self.epoch + 1}/{cfg.schedule.epochs}",
                             disable=self.quiet or not env.is_main)
        bad = [0]
        batches = device_batches(self.train_loader, self.normalize, skip_bad_images=cfg.data.skip_bad_images, bad=bad)
        zero = torch.zeros((), device=self.device)
        no_images = torch.zeros((), dtype=torch.int64, device=self.device)
        micro, step_loss, correct, images = 0, zero, no_images, 0
        lr = self._set_lr()
        start = time.perf_counter()
        try:
            for inputs, labels in batches:
                last = micro == accum - 1
                # Accumulation micro-batches before the last skip DDP's gradient all-reduce.
                sync = self.train_model.no_sync() if env.distributed and not last else contextlib.nullcontext()
                with sync:
                    with autocast(self.device, cfg.train.amp):
                        logits, loss = self._forward(inputs, labels)
                    self.scaler.scale(loss / accum).backward()
                step_loss = step_loss + loss.detach()
                correct = correct + (logits.detach().argmax(1) == labels).sum()
                images += len(labels)
                micro += 1
                if not last:
                    continue
                # One optimiser step. Its loss stays on the device until _read_pending (NaN or inf stops the run
                # there; a checkpoint reads it first, so weights after a non-finite loss are never saved).
                if cfg.optim.grad_clip:
                    self.scaler.unscale_(self.optimizer)
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                if self.ema is not None:
                    self.ema.update(self.model)
                self.global_step += 1
                self.step_in_epoch += 1
                if self.compiling:
                    self.compiling = False
                    self.log(f"torch.compile: the first step took {time.perf_counter() - start:.1f} s (compiling)")
                running = self.running
                self.pending.append((step_loss, correct))
                running["steps"] += 1
                running["images"] += images
                running["bad"] += bad[0]
                running["seconds"] += time.perf_counter() - start
                micro, step_loss, correct, images, bad[0] = 0, zero, no_images, 0, 0
                progress.update(1)
                epoch_done = self.step_in_epoch >= self.steps_per_epoch
                if epoch_done or self.step_in_epoch % cfg.train.log_every == 0:
                    self._read_pending()
                    rate = running["images"] * env.world_size / max(running["seconds"], 1e-9)
                    progress.set_postfix(loss=f"{self.last_loss:.3f}", lr=f"{lr:.4g}", img_s=f"{rate:.0f}", refresh=False)
                    if self.step_lines and not epoch_done:
                        self.log(f"epoch {self.epoch + 1:3d}/{cfg.schedule.epochs}  step {self.step_in_epoch}/"
                                 f"{self.steps_per_epoch}  loss {self.last_loss:.4f}  lr {lr:.4g}  {rate:.0f} img/s")
                if epoch_done:
                    break  # the epoch's last step: its checkpoint follows the evaluation
                lr = self._set_lr()
                every = cfg.train.checkpoint_every
                if every and self.global_step % every == 0:
                    self.save()
                start = time.perf_counter()
        finally:
            progress.close()

    def _forward(self, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, loss). A model with auxiliary classifiers (Inception-v3 with aux_logits) returns a tuple
        (logits, aux, ...) in training; their losses are added with weight 0.4, as in Szegedy et al. 2016."""
        output = self.train_model(inputs)
        if isinstance(output, tuple):
            logits, *auxiliary = output
            loss = self.criterion(logits, labels) + sum(AUX_LOSS_WEIGHT * self.criterion(a, labels) for a in auxiliary)
            return logits, loss
        return output, self.criterion(output, labels)

    def _diverged(self, value: float | str, step: int | None = None) -> None:
        kept = checkpoint_dirs(self.output)
        where = f"the last good checkpoint is {kept[0]}" if kept else "no checkpoint was written yet"
        raise TrainingDiverged(
            f"the training loss became {value} at epoch {self.epoch + 1}, step {step or self.step_in_epoch}; {where}. "
            f"Lower the learning rate (now {self.base_lr:g}) or add --warmup-epochs, then --resume {self.output}"
        )

    def _end_epoch(self) -> dict[str, Any]:
        cfg = self.config
        self._read_pending()
        dist_utils.broadcast_buffers(self.model)
        val = evaluate(self.model, self.val_loader, self.normalize, amp=cfg.train.amp, skip_bad_images=cfg.data.skip_bad_images)
        ema_val: EvalResult | None = None
        if self.ema is not None:
            dist_utils.broadcast_buffers(self.ema.module)
            ema_val = evaluate(self.ema.module, self.val_loader, self.normalize, amp=cfg.train.amp,
                               skip_bad_images=cfg.data.skip_bad_images)
        running = self.running
        correct, images, bad = dist_utils.all_reduce_sum([running["correct"], running["images"], running["bad"]], self.device)
        row: dict[str, Any] = {
            "epoch": self.epoch + 1,
            "step": self.global_step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": running["loss_sum"] / max(running["steps"], 1),
            "train_top1_err": 100.0 * (1 - correct / images) if images else None,
            "val_loss": val.loss,
            "val_top1_err": val.top1_err,
            "val_top5_err": val.top5_err,
            "images_per_s": images / running["seconds"] if running["seconds"] else None,
            "train_images": int(images),
            "train_seconds": running["seconds"],
            "val_seconds": val.seconds,
        }
        if ema_val is not None:
            row |= {"ema_val_loss": ema_val.loss, "ema_val_top1_err": ema_val.top1_err, "ema_val_top5_err": ema_val.top5_err}
        if bad or val.bad_images:
            row["bad_images"] = int(bad) + val.bad_images
        if cfg.schedule.name == "plateau":
            self.plateau.update(cfg.schedule, val.loss)
        self.history.append(row)
        self.epoch += 1
        self.step_in_epoch = 0
        self._reset_running()
        self._write_metrics()
        self.save()
        self.log(
            f"epoch {row['epoch']:3d}/{cfg.schedule.epochs}  loss {row['train_loss']:.4f}  val loss {val.loss:.4f}  "
            f"top-1 err {val.top1_err:5.2f}%  top-5 err {val.top5_err:5.2f}%  lr {row['lr']:.4g}  "
            f"{row['images_per_s'] or 0:.0f} img/s" + (f"  EMA top-1 err {ema_val.top1_err:5.2f}%" if ema_val else "")
            + (f"  ({row['bad_images']} unreadable images skipped)" if "bad_images" in row else "")
        )
        return row

    def _finish(self) -> TrainResult:
        record = self.record.replace(epoch=self.epoch, step=self.global_step)
        if self.env.is_main:
            save_weights(self.output / FINAL_WEIGHTS, self.model.state_dict(), record)
            if self.ema is not None:
                save_weights(self.output / "model_ema.safetensors", self.ema.state_dict(), record)
            self.log(f"metrics: {self.output / METRICS_FILE}; config: {self.output / CONFIG_FILE}")
        seconds = sum(row["train_seconds"] for row in self.history)
        images = sum(row["train_images"] for row in self.history)
        return TrainResult(self.output, self.history, self.model, record, seconds, images, self.splits)


def _progress(total: int, initial: int, desc: str, *, disable: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", leave=False,
                disable=disable or not sys.stderr.isatty(), dynamic_ncols=True)


def train(
    config: RunConfig,
    output: str | Path | None = None,
    *,
    resume: bool = False,
    resume_from: str | Path | None = None,
    overwrite: bool = False,
    quiet: bool = False,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train `config`, writing config.yaml, metrics.jsonl, checkpoints/ and model.safetensors to `output`.

    `resume` continues the run in `output` from its newest good checkpoint, `resume_from` from that
    checkpoint folder; `overwrite` replaces a run already in `output` instead of refusing to.
    """
    if output is None:
        if DistEnv.from_environ().distributed:
            raise ConfigError("under torchrun give --output (every process must agree on the run folder)")
        output = default_output(config)
    return Trainer(config, output, resume=resume, resume_from=resume_from, overwrite=overwrite, quiet=quiet, log=log).fit()


def clear_run(output: Path) -> None:
    """Delete what a run wrote into `output` (checkpoints, weights, config, metrics, TensorBoard logs)."""
    shutil.rmtree(output / CHECKPOINTS, ignore_errors=True)
    shutil.rmtree(output / "tensorboard", ignore_errors=True)
    for name in (FINAL_WEIGHTS, "model_ema.safetensors", CONFIG_FILE, METRICS_FILE):
        (output / name).unlink(missing_ok=True)


def resume_target(path: str | Path, *, starting: bool = False) -> tuple[Path, Path | None]:
    """(run folder, checkpoint folder or None) of `--resume PATH`: a run folder (its newest good checkpoint)
    or one of its checkpoints/step-N folders. A missing PATH is an error unless `starting` a run there."""
    path = Path(path).expanduser()
    if path.parent.name == CHECKPOINTS and (path / "meta.json").is_file():
        return path.parent.parent, path
    if not path.exists():
        if starting:
            return path, None
        raise ConfigError(f"--resume {path}: no such run folder; give the folder of an earlier senet train "
                          f"(its --output), or start a new run with --output {path}")
    if not path.is_dir():
        raise ConfigError(f"--resume {path} is a file; give a run folder or one of its checkpoints/step-N folders")
    if not starting and not (path / CONFIG_FILE).is_file() and not checkpoint_dirs(path):
        raise ConfigError(f"--resume {path}: the folder holds no senet run (no {CONFIG_FILE}, no {CHECKPOINTS}/); "
                          f"give the run folder of an earlier senet train, or start a new run with --output {path}")
    return path, None
