"""Test settings: one torch thread per pytest-xdist worker, deterministic seeds."""

import os

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    interpreting = os.environ.get("TRITON_INTERPRET") == "1"  # Triton kernels run on the CPU
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not (interpreting and "triton" in item.keywords):
            item.add_marker(skip)
