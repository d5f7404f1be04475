"""Evaluation: top-1 / top-5 error (%) and loss over a validation split (paper Sec. 5: single-crop errors)
of a network it is given with its checkpoint record (`senet eval` loads both with `interop.load`).
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
from senet.engine.distributed import DistEnv, all_reduce_sum, init_process_group, resolve_device, shutdown
from senet.errors import ConfigError, SenetError
from senet.models.features import min_input_size
from senet.weights.record import CheckpointRecord

# A network to evaluate: (network, its checkpoint record, the file it came from), as interop.load gives it.
Loaded = tuple[nn.Module, CheckpointRecord, Path]

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
# senet eval: a loaded network on a dataset's val split.


@dataclass
class EvalPipeline:
    """What `senet eval` evaluates: a network on `device`, its checkpoint record, and the loader and
    normalisation of a validation split exactly as `senet eval` reads it (the analyses reuse all of it)."""

    model: nn.Module
    record: CheckpointRecord
    source: Path
    data: str
    input_size: int
    images: ImageSet
    loader: torch.utils.data.DataLoader
    normalize: Normalize


def eval_pipeline(
    loaded: Loaded,
    data: str | None = None,
    *,
    input_size: int | None = None,
    batch_size: int = 128,
    workers: int = 4,
    device: torch.device | str = "cpu",
    env: DistEnv | None = None,
    select: Callable[[ImageSet], list[int]] | None = None,
) -> EvalPipeline:
    """The network of `loaded` on `device` and the val split of `data` (default: the data the run was
    trained on, as its record says), preprocessed as in evaluation (Sec. 5.1: resize, centre crop).

    `env` shards the split across torchrun's processes; `select` picks the positions of the images to keep."""
    model, record, source = loaded
    if data is None:
        data = record.data
        if not data:
            raise ConfigError(f"{source} does not record the data it was trained on; pass --data")
    if input_size is not None:
        check_input_size(model, record.model, input_size)
    env = env or DistEnv()
    torch_device = torch.device(device)
    size = input_size or int(record.input_size or model.default_input_size[-1])
    val, spec = open_eval_data(data, default_size=size)
    check_classes(record, val, data, folder=spec.kind == "folder", outputs=getattr(model, "num_classes", None))
    transform = EvalTransform(size, record.crop_fraction, mode=val.pil_mode)
    dataset = AugmentedDataset(val, transform)
    sampler: Iterable[tuple[int, int]] = EvalSampler(len(dataset), rank=env.rank, world_size=env.world_size)
    if select is not None:
        sampler = [(index, 0) for index in select(val)[env.rank :: env.world_size]]
    loader = make_loader(dataset, sampler, batch_size=batch_size, workers=workers, pin_memory=torch_device.type == "cuda")
    normalize = Normalize(record.mean or val.mean, record.std or val.std, torch_device)
    model.to(torch_device)
    return EvalPipeline(model, record, source, data, size, val, loader, normalize)


def result_row(result: EvalResult) -> dict[str, Any]:
    """An evaluation as `senet eval --json` reports it (floats to 4 decimals)."""
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.as_dict().items()}


def evaluate_network(
    loaded: Loaded,
    data: str | None = None,
    *,
    input_size: int | None = None,
    batch_size: int = 128,
    workers: int = 4,
    device: str = "auto",
    amp: str = "none",
    skip_bad_images: bool = False,
) -> dict[str, Any]:
    """Top-1 / top-5 error, loss, image count and throughput of a loaded network on the val split of `data`
    (default: the data the run was trained on, as its record says)."""
    env = DistEnv.from_environ()
    torch_device = resolve_device(device, env)
    init_process_group(env, torch_device)  # under torchrun each process evaluates a shard; the sums are shared
    try:
        pipeline = eval_pipeline(loaded, data, input_size=input_size, batch_size=batch_size, workers=workers,
                                 device=torch_device, env=env)
        result = evaluate(pipeline.model, pipeline.loader, pipeline.normalize, amp=amp, skip_bad_images=skip_bad_images)
    finally:
        shutdown()
    return {
        "model": pipeline.record.model,
        "checkpoint": str(pipeline.source),
        "data": pipeline.data,
        "input_size": pipeline.input_size,
        **result_row(result),
    }


def format_evaluation(result: dict[str, Any]) -> str:
    """`senet eval`'s line for what `evaluate_network` returned."""
    return (
        f"{result['model']} on {result['data']} ({result['images']} images, input {result['input_size']}): "
        f"top-1 error {result['top1_err']:.2f}%, top-5 error {result['top5_err']:.2f}%, loss {result['loss']:.4f}, "
        f"{result['images_per_s']:.0f} images/s"
        + (f" ({result['bad_images']} unreadable images skipped)" if result["bad_images"] else "")
    )


def check_input_size(model: nn.Module, name: str, size: int) -> None:
    """ConfigError if `size` is below the smallest input `model` (named `name`) is meant for."""
    minimum = min_input_size(model)
    if size < minimum:
        hint = ", or a model for small images (the CIFAR ResNets such as se_resnet20 take 4 and more)" if minimum > 4 else ""
        raise ConfigError(
            f"{name} needs inputs of at least {minimum} pixels (at its total stride its last feature map is one "
            f"pixel), got {size}; use --input-size {minimum} or more{hint}"
        )


def check_classes(
    record: CheckpointRecord, images: ImageSet, data: str, *, folder: bool = False, outputs: int | None = None
) -> None:
    """The data must have the classes the model was trained on (same count; same names where both have names).

    `outputs`, the classifier's width, is compared too, for checkpoints that record no class names (a converted
    ImageNet model scored on a 3-class folder would be wrong on every image, and silently)."""
    classes = record.classes
    count = len(classes) if classes is not None else outputs
    if count is not None and count != len(images.classes):
        raise ConfigError(
            f"the model was trained on {count} classes but {data} has {len(images.classes)}: its predictions cannot "
            f"be scored against these labels; use data with the model's {count} classes, or train a model for these "
            "with `senet train --pretrained CHECKPOINT --data DATA` (it replaces the classifier)"
        )
    if classes is not None and folder and list(classes) != list(images.classes):
        raise ConfigError(f"the class folders of {data} differ from the classes the model was trained on")
    channels = record.channels
    if channels is not None and channels != images.channels:
        raise ConfigError(f"the model takes {channels}-channel images but {data} has {images.channels}")
