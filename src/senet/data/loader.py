"""Batches: the epoch samplers (shuffled, sharded across ranks, resumable), collation and normalisation.

Batches travel as uint8 (N, C, H, W) tensors (a quarter of the float32 bytes through worker queues and
to the device) and are normalised on the device by `Normalize`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from senet.data.datasets import AugmentedDataset
from senet.data.images import BadImage


class TrainSampler(torch.utils.data.Sampler):
    """Keys (index, epoch) of one training epoch on one rank: shuffled by (seed, epoch), resumable.

    The permutation of every epoch comes from (seed, epoch) alone. It is padded by wrapping around to a
    multiple of `world_size` and rank r takes positions r, r + world, ... (as torch's DistributedSampler),
    so every rank sees the same number of samples. `set_epoch(epoch, start)` skips the first `start`
    samples of this rank's share: a run resumed mid-epoch continues exactly where it stopped.
    """

    def __init__(self, size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True) -> None:
        if size < 1:
            raise ValueError("TrainSampler needs at least one sample")
        self.size = size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.epoch = 0
        self.start = 0

    @property
    def per_rank(self) -> int:
        return -(-self.size // self.world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def indices(self) -> list[int]:
        if self.shuffle:
            order = np.random.default_rng((self.seed, self.epoch)).permutation(self.size).tolist()
        else:
            order = list(range(self.size))
        total = self.per_rank * self.world_size
        order += order[: total - len(order)]
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self.indices()[self.start :]:
            yield index, self.epoch

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start)


class EvalSampler(torch.utils.data.Sampler):
    """Keys of an evaluation pass on one rank: positions rank, rank + world, ... (no padding, no repeats)."""

    def __init__(self, size: int, *, rank: int = 0, world_size: int = 1) -> None:
        self.size = size
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in range(self.rank, self.size, self.world_size):
            yield index, 0

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world_size))


class Batch(NamedTuple):
    """uint8 images (N, C, H, W), int64 labels (N,), and the unreadable images left out of this batch."""

    images: Tensor
    labels: Tensor
    bad: list[BadImage]


def collate(samples: Sequence[tuple[np.ndarray, int] | BadImage]) -> Batch:
    good = [s for s in samples if not isinstance(s, BadImage)]
    bad = [s for s in samples if isinstance(s, BadImage)]
    if good:
        images = torch.from_numpy(np.stack([image for image, _ in good])).permute(0, 3, 1, 2)
        labels = torch.tensor([label for _, label in good], dtype=torch.int64)
    else:
        images = torch.empty((0, 0, 0, 0), dtype=torch.uint8)
        labels = torch.empty((0,), dtype=torch.int64)
    return Batch(images, labels, bad)


def _worker_init(worker_id: int) -> None:
    # Decoding is the workers' job; one intra-op thread each keeps them from competing with the model.
    torch.set_num_threads(1)


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask: what a scheduler or taskset granted)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def make_loader(
    dataset: AugmentedDataset,
    sampler: torch.utils.data.Sampler,
    *,
    batch_size: int,
    workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """A DataLoader over `dataset` in the order `sampler` gives, collated to uint8 `Batch`es.

    `workers` is capped at the cores available: more decoding processes than cores only compete.
    """
    workers = min(workers, available_cores())
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        drop_last=drop_last,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if workers > 0 else None,
        prefetch_factor=4 if workers > 0 else None,
    )


class Normalize:
    """uint8 (N, C, H, W) on any device -> float (x / 255 - mean) / std on `device`, optionally channels_last."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device | str = "cpu",
        *,
        channels_last: bool = False,
    ) -> None:
        self.device = torch.device(device)
        # (x / 255 - mean) / std == x * scale + shift, one fused multiply-add per pixel.
        std_t = torch.tensor(std, dtype=torch.float32)
        mean_t = torch.tensor(mean, dtype=torch.float32)
        self.scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1).to(self.device)
        self.shift = (-mean_t / std_t).view(1, -1, 1, 1).to(self.device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: Tensor) -> Tensor:
        images = images.to(self.device, non_blocking=True)
        out = torch.addcmul(self.shift, images.float(), self.scale)
        return out.contiguous(memory_format=self.memory_format)
