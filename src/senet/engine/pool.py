"""Several training runs at once on one machine, one process and an equal share of the cores each.

Side by side is both faster and fairer than taking turns on a CPU: each run has its own thread pool of
`cores // jobs` threads, so no run's timing is disturbed by another's. Used by `senet demo` (two
networks) and `senet ablate` (a sweep of variants and seeds).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any

import torch

from senet import allocator
from senet.engine.config import RunConfig
from senet.engine.train import train
from senet.errors import SenetError


def threads_per_job(jobs: int) -> int:
    """torch threads for each of `jobs` runs sharing this machine's cores."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def train_one(config: dict[str, Any], output: str, threads: int, resume: bool = False) -> dict[str, Any]:
    """Train one run (in a worker process or in this one) with `threads` torch threads; its summary.

    `resume` continues the run in `output` from its newest checkpoint, or starts it there if it has none.
    """
    torch.set_num_threads(threads)
    allocator.keep_freed_memory()  # a spawned worker starts with the system's malloc settings
    result = train(RunConfig.from_dict(config), output, resume=resume, quiet=True)
    return {"history": result.history, "train_seconds": result.train_seconds, "train_images": result.train_images}


@contextmanager
def worker_pool(jobs: int) -> Iterator[ProcessPoolExecutor]:
    """`jobs` fresh (spawned) worker processes: no state copied from this process's torch."""
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


def train_many(
    runs: Sequence[tuple[RunConfig, str, bool]],
    jobs: int,
    on_done: Callable[[int, dict[str, Any]], None],
) -> None:
    """Train each (config, output, resume) of `runs`, `jobs` at a time; on_done(index, summary) as each ends.

    A run that fails with a SenetError (diverged, disk full) reports {"error": message} and the rest go on.
    With one job the runs train in this process, one after another, with the threads torch already has.
    """
    if jobs <= 1:
        for index, (config, output, resume) in enumerate(runs):
            try:
                summary = train_one(config.to_dict(), output, torch.get_num_threads(), resume)
            except SenetError as error:
                summary = {"error": str(error)}
            on_done(index, summary)
        return
    threads = threads_per_job(jobs)
    with worker_pool(min(jobs, len(runs))) as pool:
        futures: dict[Future, int] = {
            pool.submit(train_one, config.to_dict(), output, threads, resume): index
            for index, (config, output, resume) in enumerate(runs)
        }
        try:
            for future in as_completed(futures):
                try:
                    summary = future.result()
                except SenetError as error:  # a diverged run, a full disk: the other runs go on
                    summary = {"error": str(error)}
                on_done(futures[future], summary)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
