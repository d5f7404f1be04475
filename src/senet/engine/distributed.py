"""torch.distributed as torchrun launches it, detected from the environment (RANK, WORLD_SIZE, LOCAL_RANK).

A single process is the same code path with world size 1 and no process group. Under torchrun the
backend is NCCL on GPUs and gloo on CPUs; each process drives the GPU numbered by its LOCAL_RANK.
"""

from __future__ import annotations

import collections
import io
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
    imported, which happens lazily: torch._dynamo imports it, and torch._dynamo is itself imported on first
    use (by the optimizer, torch.compile, a `torch.library.custom_op`). Imported while a group exists, it
    holds that group for good: destroy_process_group cannot free it, its gloo threads outlive the
    interpreter and abort the process at exit. Importing it here, before the group exists, binds None
    instead.
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


# The tensors of the most recent collectives, held until newer ones replace them. A gloo worker thread
# lets go of a collective's tensors a little after the collective completes. Were that the last reference
# to a tensor Python made, the thread would need the GIL to free it; if the main thread is then freeing the
# process group (which joins those threads with the GIL held), neither moves and the process hangs at the
# end of the run (seen about once in 25 torchrun jobs). Held here, their last reference is never a gloo
# thread's. Older entries are long retired, and the main thread frees them.
_recent_collective_tensors: collections.deque[torch.Tensor] = collections.deque(maxlen=64)


def _hold(*tensors: torch.Tensor) -> None:
    _recent_collective_tensors.extend(tensors)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of `values` over every process (identity for a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    _hold(tensor)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_gather_objects(value: Any, device: torch.device) -> list[Any]:
    """[value of rank 0, value of rank 1, ...] (a one-element list for a single process).

    `value` is made of tensors, numbers, strings, lists and dicts (what `torch.load(weights_only=True)`
    reads back: nothing is unpickled). Gathered as byte tensors this module holds (see above), not
    with `dist.all_gather_object`, whose tensors the caller cannot hold.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    buffer = io.BytesIO()
    torch.save(value, buffer)
    data = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8).to(device)
    world = dist.get_world_size()
    size = torch.tensor([data.numel()], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    _hold(size, *sizes)
    dist.all_gather(sizes, size)
    lengths = [int(s.item()) for s in sizes]
    padded = torch.zeros(max(lengths), dtype=torch.uint8, device=device)
    padded[: data.numel()] = data
    gathered = [torch.empty_like(padded) for _ in range(world)]
    _hold(padded, *gathered)
    dist.all_gather(gathered, padded)
    return [torch.load(io.BytesIO(t[:n].cpu().numpy().tobytes()), weights_only=True) for t, n in zip(gathered, lengths)]


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every process, so that all evaluate one model."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
