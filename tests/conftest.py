"""Test settings: one torch thread per pytest-xdist worker, deterministic seeds, freed memory returned."""

import ctypes
import os
import sys

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _resident_mib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) // 1024 for line in status if line.startswith("VmRSS:"))


@pytest.fixture(autouse=True)
def _return_freed_memory():
    """glibc keeps the memory a test freed (all of it once an in-process `senet` command has called
    `senet.allocator.keep_freed_memory`): a worker running the slow suite's large models (TorchScript in
    float64) grew to 15 GB and two of them ran out of 24. Hand it back after a test that left the worker
    above 1 GiB."""
    yield
    if sys.platform.startswith("linux") and _resident_mib() > 1024:
        try:
            ctypes.CDLL(None).malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    interpreting = os.environ.get("TRITON_INTERPRET") == "1"  # Triton kernels run on the CPU
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not (interpreting and "triton" in item.keywords):
            item.add_marker(skip)
