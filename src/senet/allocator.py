"""The CPU memory allocator of a training process: keep freed memory for the next step.

glibc's malloc (Linux) hands large freed blocks back to the system: it maps blocks above a threshold
(adaptive, up to 32 MiB) straight from the system and unmaps them on free, and trims the top of its heap
once more than twice that is free there. A training step frees most of its activation memory during the
backward pass and needs it again in the next forward pass, so every step page-faults it in afresh, and
the kernel zeroes each page first. On the 2-core development machine that was 3,000 to 40,000 minor
faults per step of ResNet-50 or SE-ResNet-50 at batch 8 (`getrusage`), in these measurements more of
them in SE-ResNet-50's backward pass; with freed memory kept, none (docs/speed.md has the measurements).
PyTorch's CUDA allocator keeps freed GPU memory the same way.

`keep_freed_memory()` asks glibc (`mallopt`) never to map blocks of their own and never to trim: the
process keeps its peak memory until it exits. senet's own commands call it (`senet train`, `bench`,
`demo`, ...); set ``SENET_MALLOC=system`` to leave malloc as it is. In a script of your own, call it
before training, or start Python with ``GLIBC_TUNABLES`` set to `TUNABLES`
(``glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647``).
"""

from __future__ import annotations

import ctypes
import os
import sys

from senet.errors import check_choice

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # the largest a C int holds: never trim
# The same settings for a process started with GLIBC_TUNABLES.
TUNABLES = f"glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold={TRIM_THRESHOLD}"
ENV = "SENET_MALLOC"
SETTINGS = ("kept", "system")
_kept = False


def keep_freed_memory() -> bool:
    """Keep memory freed by this process for reuse instead of returning it to the system (glibc only).

    Returns whether the setting took: False on other C libraries (macOS, musl, Windows), where nothing
    changes, and when ``SENET_MALLOC=system`` is set (any other value than ``kept`` or ``system`` is a
    ConfigError).
    """
    setting = check_choice(ENV, os.environ.get(ENV, "kept").lower(), SETTINGS)
    if setting == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library this Python runs on
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    global _kept
    _kept = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _kept


def describe() -> str:
    """How this process's malloc treats freed memory, for the record of a measurement."""
    return "freed memory kept (senet)" if _kept else "system default"
