"""Evaluation: top-1 / top-5 error (%) and loss over a validation split (paper Sec. 5: single-crop errors),
and `senet eval`, which rebuilds a trained model from its checkpoint's metadata alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from senet.data import AugmentedDataset, Batch, EvalSampler, EvalTransform, Normalize, make_loader
from senet.data.datasets import ImageSet
from senet.data.spec import open_eval_data
from senet.weights.checkpoint import CheckpointError
from senet.engine.distributed import DistEnv, all_reduce_sum, init_process_group, resolve_device, shutdown
from senet.errors import ConfigError, SenetError

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class EvalResult:
    """Errors in percent (100 - accuracy), mean cross-entropy, images seen and unreadable ones skipped."""

    top1_err: float
    top5_err: float
    loss: float
    images: int
    seconds: float
    bad_images: int = 0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"images_per_s": round(self.images_per_s, 1)}


def autocast(device: torch.device, amp: str):
    """The autocast context of `amp` (none, bf16, fp16) on `device`."""
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def device_batches(
    loader: Iterable[Batch], normalize: Normalize, *, skip_bad_images: bool = False, bad: list[int] | None = None
) -> Iterator[tuple[Tensor, Tensor]]:
    """(normalised images, labels) on the device from uint8 batches; an unreadable image stops the run unless
    `skip_bad_images`, in which case the count of skipped images is added to bad[0]."""
    for batch in loader:
        if batch.bad:
            if not skip_bad_images:
                raise batch.bad[0].error()
            if bad is not None:
                bad[0] += len(batch.bad)
        if len(batch.labels) == 0:
            continue
        yield normalize(batch.images), batch.labels.to(normalize.device, non_blocking=True)


def topk_correct(logits: Tensor, labels: Tensor, k: int) -> Tensor:
    """(top-1 correct, top-k correct) counts of a batch, an int64 tensor (2,) on the logits' device (not read
    from it: reading waits for the device)."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    hits = top == labels[:, None]
    return torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum()])


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[Batch],
    normalize: Normalize,
    *,
    amp: str = "none",
    skip_bad_images: bool = False,
) -> EvalResult:
    """Single-crop top-1 / top-5 error and loss of `model` over `loader`, summed over all processes."""
    was_training = model.training
    model.eval()
    # The sums stay on the device and are read once, after the last batch (a read waits for the device):
    # each batch's summed loss (float32) added in float64 as it comes, and the correct counts as int64.
    device = normalize.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros(2, dtype=torch.int64, device=device)
    images, bad = 0, [0]
    start = time.perf_counter()
    try:
        for inputs, labels in device_batches(loader, normalize, skip_bad_images=skip_bad_images, bad=bad):
            with autocast(device, amp):
                logits = model(inputs)
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").double()
            correct += topk_correct(logits, labels, 5)
            images += len(labels)
        top1, top5 = correct.tolist()
        loss = loss_sum.item()
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    loss, top1, top5, images, bad_count = all_reduce_sum([loss, top1, top5, images, bad[0]], device)
    if images == 0:
        raise SenetError("the validation split has no readable images")
    return EvalResult(
        top1_err=100.0 * (1 - top1 / images),
        top5_err=100.0 * (1 - top5 / images),
        loss=loss / images,
        images=int(images),
        seconds=seconds,
        bad_images=int(bad_count),
    )


# ---------------------------------------------------------------------------------------------------
# senet eval: a checkpoint (run folder, checkpoint folder or .safetensors file) on a dataset's val split.


def model_from_meta(state: dict[str, Tensor], meta: dict[str, Any], source: Path) -> nn.Module:
    """Rebuild the network a checkpoint's metadata describes and load its weights."""
    from senet.models import create_model

    if "model" not in meta:
        raise CheckpointError(f"{source} has no senet metadata (model name and settings); was it written by senet train?")
    model = create_model(meta["model"], **meta.get("kwargs", {}))
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
        raise CheckpointError(f"the weights in {source} do not fit {meta['model']}: {first}") from None
    return model


@dataclass
class EvalPipeline:
    """What `senet eval` evaluates: the network of a checkpoint on `device`, its metadata, and the loader and
    normalisation of a validation split exactly as `senet eval` reads it (the analyses reuse all of it)."""

    model: nn.Module
    meta: dict[str, Any]
    source: Path
    data: str
    input_size: int
    images: ImageSet
    loader: torch.utils.data.DataLoader
    normalize: Normalize


def open_checkpoint(checkpoint: str | Path, *, ema: bool = False) -> tuple[nn.Module, dict[str, Any], Path]:
    """(network, senet metadata, file) of any checkpoint `senet.load_model` reads (see `interop.load`)."""
    from senet.interop.load import load_for_evaluation  # (interop reads senet's files through this module)

    return load_for_evaluation(checkpoint, ema=ema)


def eval_pipeline(
    checkpoint: str | Path | tuple[nn.Module, dict[str, Any], Path],
    data: str | None = None,
    *,
    input_size: int | None = None,
    batch_size: int = 128,
    workers: int = 4,
    device: torch.device | str = "cpu",
    ema: bool = False,
    env: DistEnv | None = None,
    select: Callable[[ImageSet], list[int]] | None = None,
) -> EvalPipeline:
    """The network of `checkpoint` on `device` and the val split of `data` (default: the data the run was
    trained on, as its metadata records), preprocessed as in evaluation (Sec. 5.1: resize, centre crop).

    `checkpoint` may also be what `open_checkpoint` returned. `env` shards the split across torchrun's
    processes; `select` picks the positions of the images to keep."""
    model, meta, source = checkpoint if isinstance(checkpoint, tuple) else open_checkpoint(checkpoint, ema=ema)
    if data is None:
        data = meta.get("data")
        if not data:
            raise ConfigError(f"{source} does not record the data it was trained on; pass --data")
    if input_size is not None:
        from senet.models import create_model

        with torch.device("meta"):
            check_input_size(create_model(meta["model"], **meta.get("kwargs", {})), meta["model"], input_size)
    env = env or DistEnv()
    torch_device = torch.device(device)
    size = input_size or int(meta.get("input_size") or model.default_input_size[-1])
    val, spec = open_eval_data(data, default_size=size)
    check_classes(meta, val, data, folder=spec.kind == "folder")
    transform = EvalTransform(size, float(meta.get("eval_crop_fraction", 0.875)), mode=val.pil_mode)
    dataset = AugmentedDataset(val, transform)
    sampler: Iterable[tuple[int, int]] = EvalSampler(len(dataset), rank=env.rank, world_size=env.world_size)
    if select is not None:
        sampler = [(index, 0) for index in select(val)[env.rank :: env.world_size]]
    loader = make_loader(dataset, sampler, batch_size=batch_size, workers=workers, pin_memory=torch_device.type == "cuda")
    normalize = Normalize(meta.get("mean") or val.mean, meta.get("std") or val.std, torch_device)
    model.to(torch_device)
    return EvalPipeline(model, meta, source, data, size, val, loader, normalize)


def result_row(result: EvalResult) -> dict[str, Any]:
    """An evaluation as `senet eval --json` reports it (floats to 4 decimals)."""
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.as_dict().items()}


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str | None = None,
    *,
    input_size: int | None = None,
    batch_size: int = 128,
    workers: int = 4,
    device: str = "auto",
    amp: str = "none",
    ema: bool = False,
    skip_bad_images: bool = False,
) -> dict[str, Any]:
    """Top-1 / top-5 error, loss, image count and throughput of a checkpoint on the val split of `data`
    (default: the data the run was trained on, as its metadata records)."""
    env = DistEnv.from_environ()
    torch_device = resolve_device(device, env)
    init_process_group(env, torch_device)  # under torchrun each process evaluates a shard; the sums are shared
    try:
        pipeline = eval_pipeline(checkpoint, data, input_size=input_size, batch_size=batch_size, workers=workers,
                                 device=torch_device, ema=ema, env=env)
        result = evaluate(pipeline.model, pipeline.loader, pipeline.normalize, amp=amp, skip_bad_images=skip_bad_images)
    finally:
        shutdown()
    return {
        "model": pipeline.meta["model"],
        "checkpoint": str(pipeline.source),
        "data": pipeline.data,
        "input_size": pipeline.input_size,
        **result_row(result),
    }


def check_input_size(model: nn.Module, name: str, size: int) -> None:
    """ConfigError if `size` is below the smallest input `model` (named `name`) is meant for."""
    from senet.analysis.complexity import min_input_size

    minimum = min_input_size(model)
    if size < minimum:
        hint = ", or a model for small images (the CIFAR ResNets such as se_resnet20 take 4 and more)" if minimum > 4 else ""
        raise ConfigError(
            f"{name} needs inputs of at least {minimum} pixels (at its total stride its last feature map is one "
            f"pixel), got {size}; use --input-size {minimum} or more{hint}"
        )


def check_classes(meta: dict[str, Any], images: ImageSet, data: str, *, folder: bool = False) -> None:
    """The data must have the classes the model was trained on (same count; same names where both have names)."""
    classes = meta.get("classes")
    if classes is None:
        return
    if len(classes) != len(images.classes):
        raise ConfigError(f"the model was trained on {len(classes)} classes but {data} has {len(images.classes)}")
    if folder and list(classes) != list(images.classes):
        raise ConfigError(f"the class folders of {data} differ from the classes the model was trained on")
    channels = meta.get("channels")
    if channels is not None and channels != images.channels:
        raise ConfigError(f"the model takes {channels}-channel images but {data} has {images.channels}")
