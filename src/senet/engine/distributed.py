"""torch.distributed as torchrun launches it, detected from the environment (RANK, WORLD_SIZE, LOCAL_RANK).

A single process is the same code path with world size 1 and no process group. Under torchrun the
backend is NCCL on GPUs and gloo on CPUs; each process drives the GPU numbered by its LOCAL_RANK.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from senet.errors import ConfigError


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environ(cls) -> DistEnv:
        """Read torchrun's variables; a plain `senet train` has none and is rank 0 of 1."""
        try:
            return cls(
                rank=int(os.environ.get("RANK", 0)),
                local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                world_size=int(os.environ.get("WORLD_SIZE", 1)),
            )
        except ValueError:
            raise ConfigError("RANK, LOCAL_RANK and WORLD_SIZE must be integers (torchrun sets them)") from None


def resolve_device(name: str, env: DistEnv) -> torch.device:
    """`auto` is this process's GPU if there is one, else the CPU; `cuda` under torchrun means cuda:LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", env.local_rank if env.distributed else torch.cuda.current_device())
        torch.cuda.set_device(device)
    elif device.type not in ("cpu", "mps"):
        raise ConfigError(f"unsupported device {name!r}; use auto, cpu or cuda")
    return device


def init_process_group(env: DistEnv, device: torch.device) -> None:
    """Join the torchrun job (NCCL on GPU, gloo on CPU); nothing to do for a single process.

    torchrun keeps one key-value store for the whole job, also across `--max-restarts` restarts, and
    the process group's keys (where each rank listens) are the same in every attempt; a restarted
    worker could read the address its dead predecessor published and connect to nothing. The group
    therefore lives under a prefix of its own attempt (TORCHELASTIC_RESTART_COUNT).

    torch.distributed.nn.functional binds `group=group.WORLD` as default arguments when it is first
    imported, which happens lazily (torch._dynamo imports it on the first call of a custom op, such as
    the SE merge). Imported while a group exists, it holds that group for good: destroy_process_group
    cannot free it, its gloo threads outlive the interpreter and abort the process at exit. Importing
    it here, before the group exists, binds None instead.
    """
    if not env.distributed or dist.is_initialized():
        return
    import torch.distributed.nn  # noqa: F401  (see above)

    backend = "nccl" if device.type == "cuda" else "gloo"
    store, rank, world_size = next(dist.rendezvous("env://"))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(
        backend=backend,
        store=dist.PrefixStore(f"senet/attempt-{attempt}", store),
        rank=rank,
        world_size=world_size,
        device_id=device if device.type == "cuda" else None,
    )


def shutdown() -> None:
    """Leave the job: wait until every process is done with its collectives, then free the group
    (which joins its gloo threads while the interpreter is still alive)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of `values` over every process (identity for a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_gather_objects(value: Any) -> list[Any]:
    """[value of rank 0, value of rank 1, ...] (a one-element list for a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every process, so that all evaluate one model."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
