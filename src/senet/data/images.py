"""Decoding with Pillow: lazy open, JPEG draft-mode downscaling, crop-and-resize, conversion to RGB.

Every geometric transform in senet reduces to one call of `crop_resize`: take a box of the source
image (in its own pixel coordinates) and resample it to the output size. For a JPEG that will be
downscaled, the decoder is first put into draft mode, so that it decodes at 1/2, 1/4 or 1/8 of the
full resolution (DCT scaling) instead of decoding every pixel and throwing most of them away.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from senet.errors import SenetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm")

# A source image: an already-decoded uint8 array (H, W) or (H, W, C), or a lazily opened Pillow image.
Source = np.ndarray | Image.Image
Box = tuple[float, float, float, float]  # left, upper, right, lower


class BadImageError(SenetError):
    """An image file that cannot be read or decoded."""


@dataclass(frozen=True)
class BadImage:
    """An unreadable image met while loading; the loader counts it or stops with its name."""

    name: str
    reason: str

    def error(self) -> BadImageError:
        return BadImageError(
            f"cannot read image {self.name}: {self.reason}; delete or replace it, or pass --skip-bad-images"
        )


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image without decoding its pixels (Pillow reads only the header until they are needed)."""
    return Image.open(path)


def source_size(image: Source) -> tuple[int, int]:
    """(width, height) of a source image."""
    if isinstance(image, np.ndarray):
        return image.shape[1], image.shape[0]
    return image.size


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert any Pillow image to `mode` ("RGB" or "L"): grayscale, CMYK, RGBA, palette, 16-bit all work.

    Transparent pixels become black, as in a plain `convert("RGB")`; 16-bit and 32-bit grayscale keep
    their top 8 bits rather than being clipped at 255.
    """
    if image.mode == mode:
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.int64)
        top = 65535 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 255
        image = Image.fromarray((np.clip(array, 0, top) * 255 // top).astype(np.uint8))
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8))
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # Pillow warns when a palette with transparency goes straight to RGB
    return image.convert(mode)


# Resampling filters by name (a checkpoint's preprocessing names one; training uses bilinear).
RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC, "nearest": Image.Resampling.NEAREST}


def crop_resize(
    image: Source, box: Box, size: tuple[int, int], mode: str | None = None, interpolation: str = "bilinear"
) -> np.ndarray:
    """Resample `box` of `image` to `size` (width, height) with bilinear filtering (or `interpolation`);
    uint8 (H, W, C) out.

    A lazily opened JPEG is decoded in draft mode at the coarsest DCT scale that still leaves the box at
    least `size` pixels, so a 4000-pixel photo cropped to 224 costs a fraction of a full decode.
    `mode` converts a Pillow image ("RGB" or "L"); arrays keep their channels.
    """
    width, height = size
    if isinstance(image, np.ndarray):
        if box == (0, 0, image.shape[1], image.shape[0]) and (image.shape[1], image.shape[0]) == size:
            return image if image.ndim == 3 else image[:, :, None]
        image = Image.fromarray(image if image.ndim == 2 or image.shape[2] > 1 else image[:, :, 0])
    elif image.format == "JPEG":  # draft() does nothing once the pixels are decoded
        full_w, full_h = image.size
        box_w, box_h = max(box[2] - box[0], 1), max(box[3] - box[1], 1)
        wanted = (max(1, int(full_w * width / box_w)), max(1, int(full_h * height / box_h)))
        if image.draft(None, wanted) is not None and image.size != (full_w, full_h):
            sx, sy = image.size[0] / full_w, image.size[1] / full_h
            box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
    if mode is not None:
        image = to_mode(image, mode)
    out = image.resize(size, RESAMPLING[interpolation], box=box)
    array = np.asarray(out, dtype=np.uint8)
    return array if array.ndim == 3 else array[:, :, None]
