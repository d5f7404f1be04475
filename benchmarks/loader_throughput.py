"""Data loader throughput: 224-pixel training crops from JPEGs per worker process (Pillow, draft mode).

    python benchmarks/loader_throughput.py                  # 400 synthetic photo-like JPEGs, 500x375
    python benchmarks/loader_throughput.py --photo 2000x1500 --images 100   # large photos: draft mode pays
    python benchmarks/loader_throughput.py --folder /data/imagenet --images 2000

Measures (1) the decode + random-size crop + flip rate of one process with JPEG draft mode, and
without it (a full decode, as a loader that ignores draft mode does), (2) the evaluation transform,
and (3) a DataLoader with W workers feeding uint8 batches to a consumer that does nothing, which
includes collation and the transfer between processes. Compare the images/s with the model's
training rate (train_throughput.py) to see whether the loader keeps up.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from senet.bench import environment, provenance_line
from senet.data import AugmentedDataset, EvalTransform, TrainSampler, TrainTransform, make_loader, open_data


def photo_like_jpegs(folder: Path, count: int, size: tuple[int, int]) -> None:
    """Smooth colour fields with texture: JPEG sizes and decode costs near those of ImageNet photos."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0 : size[1], 0 : size[0]].astype(np.float32)
    for split in ("train", "val"):
        (folder / split / "things").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        phase = rng.uniform(0, 6.28, 3)
        freq = rng.uniform(0.005, 0.05, 3)
        channels = [127 + 90 * np.sin(freq[c] * x + phase[c]) * np.cos(freq[(c + 1) % 3] * y) for c in range(3)]
        image = np.stack(channels, -1) + rng.normal(0, 12, (size[1], size[0], 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / "train" / "things" / f"{index:05d}.jpg", quality=90)
    Image.new("RGB", size).save(folder / "val" / "things" / "0.jpg")


def rate(function, keys) -> float:
    start = time.perf_counter()
    for key in keys:
        function(key)
    return len(keys) / (time.perf_counter() - start)


class FullDecode:
    """The training transform after decoding every pixel first (what ignoring draft mode costs)."""

    def __init__(self, transform: TrainTransform) -> None:
        self.transform = transform

    def __call__(self, image, rng):
        image.load()  # a full-resolution decode before the crop: draft() can no longer reduce it
        return self.transform(image, rng)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", help="an ImageFolder root (default: generate JPEGs in a temporary folder)")
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--photo", default="500x375", help="size of the generated JPEGs (ImageNet's are about 500x375)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(args.folder) if args.folder else Path(temporary)
        if not args.folder:
            photo_like_jpegs(root, args.images, tuple(int(v) for v in args.photo.split("x")))
        train = open_data(f"folder:{root}").train
        count = min(args.images, len(train))
        keys = [(index, 0) for index in range(count)]
        mean_kb = np.mean([(train.root / train.files[i]).stat().st_size for i in range(count)]) / 1024
        print(provenance_line(environment()))
        print(f"{count} JPEGs, mean {mean_kb:.0f} KB, first {Image.open(train.root / train.files[0]).size}; output {args.size}px")
        transform = TrainTransform(args.size, mode="RGB")
        drafted = AugmentedDataset(train, transform)
        full = AugmentedDataset(train, FullDecode(transform))
        evaluation = AugmentedDataset(train, EvalTransform(args.size, 0.875, mode="RGB"))
        rate(drafted.__getitem__, keys[:20])  # warm the page cache
        print(f"  one process, train crop, draft mode:  {rate(drafted.__getitem__, keys):7.0f} images/s")
        print(f"  one process, train crop, full decode: {rate(full.__getitem__, keys):7.0f} images/s")
        print(f"  one process, eval resize + crop:      {rate(evaluation.__getitem__, keys):7.0f} images/s")
        for workers in args.workers:
            sampler = TrainSampler(count, seed=0)
            loader = make_loader(drafted, sampler, batch_size=args.batch_size, workers=workers, drop_last=True)
            next(iter(loader))  # start-up
            start = time.perf_counter()
            images = sum(len(batch.labels) for batch in loader)
            print(f"  DataLoader, {workers} worker(s):            {images / (time.perf_counter() - start):7.0f} images/s")


if __name__ == "__main__":
    main()
