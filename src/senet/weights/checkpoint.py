"""Checkpoints: weights in safetensors, trainer state through `torch.load(weights_only=True)`, atomic writes.

A run folder holds

    checkpoints/step-00001234/   model.safetensors, [ema.safetensors], trainer.pt, meta.json
    model.safetensors            the final weights, [model_ema.safetensors]

Every checkpoint is written into a temporary folder, each file flushed to disk (fsync), and the folder
renamed into place: a process killed at any moment leaves either the complete new checkpoint or none,
and the previous one is deleted only after the new one is in place. meta.json, written last, holds the
SHA-256 of every file, so a checkpoint damaged later (truncated copy, bad disk) is recognised.

The weights files carry the record that rebuilds the model without flags (`weights.record.CheckpointRecord`:
model name and keywords, class names, normalisation, input size) as JSON in the safetensors header under
the key "senet".
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as safetensors_bytes

from senet.errors import NO_SPACE, FileSystemError, SenetError, cause, file_system_error, refusal
from senet.weights.record import CheckpointRecord

CHECKPOINTS = "checkpoints"
PREFIX = "step-"
FORMAT = "senet-checkpoint"
META_KEY = "senet"


class CheckpointError(SenetError):
    """A checkpoint that is missing, truncated, corrupt or cannot be written."""


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _normal_permissions(path: Path) -> None:
    """Give a written file the permissions of any file the user creates (0644 under the usual umask 022):
    safetensors writes its files 0600, temporary files are often private."""
    os.chmod(path, 0o666 & ~_umask())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(temp) for a temporary file next to `path`, fsync it, then rename it to `path`.

    A file system that refuses (read-only, full) raises FileSystemError `cannot write PATH: CAUSE`; `path`
    is then as it was, and the temporary file is gone (its removal never hides the first error)."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(temp)
        _normal_permissions(temp)
        _fsync(temp)
        os.replace(temp, path)
        _fsync(path.parent)
    except BaseException as error:
        refused = file_system_error(error, path) if isinstance(error, Exception) else None  # (before the removal frees space)
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        if refused is None:
            raise
        raise refused from None


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().to("cpu").contiguous() for key, value in state.items()}


def _header(record: CheckpointRecord) -> dict[str, str]:
    return {META_KEY: record.to_json()}


def weights_bytes(state: dict[str, torch.Tensor], record: CheckpointRecord) -> bytes:
    """A state dict as the bytes of a safetensors file with `record` as JSON in its header (written by senet's
    own file calls, so that a refusing disk reports its errno rather than a serialiser's message)."""
    return safetensors_bytes(_tensors(state), metadata=_header(record))


def save_weights(path: Path, state: dict[str, torch.Tensor], record: CheckpointRecord) -> None:
    """Write a state dict as safetensors (atomically) with `record` as JSON in its header."""
    data = weights_bytes(state, record)
    atomic_write(Path(path), lambda temp: temp.write_bytes(data))


def read_record(path: Path) -> CheckpointRecord | None:
    """The checkpoint record of a safetensors file (None for files senet did not write)."""
    try:
        with safe_open(str(path), framework="pt") as file:
            header = file.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file ({error}); it may be truncated or corrupt") from None
    if META_KEY not in header:
        return None
    try:
        return CheckpointRecord.from_json(header[META_KEY], str(path))
    except SenetError as error:
        raise CheckpointError(str(error)) from None


def load_weights(path: Path) -> tuple[dict[str, torch.Tensor], CheckpointRecord | None]:
    """(state dict, checkpoint record or None) of a safetensors file; CheckpointError if it is damaged."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    record = read_record(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, RuntimeError) as error:
        raise CheckpointError(f"{path} cannot be read ({error}); it may be truncated or corrupt") from None
    return state, record


@dataclass
class Checkpoint:
    """A loaded checkpoint: model (and EMA) weights, the trainer's state and the weights' record."""

    path: Path
    step: int
    model: dict[str, torch.Tensor]
    trainer: dict[str, Any]
    record: CheckpointRecord | None
    ema: dict[str, torch.Tensor] | None = None


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """The run's checkpoint folders, newest (highest step) first; temporary leftovers are ignored."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        if entry.is_dir() and entry.name.startswith(PREFIX) and entry.name[len(PREFIX) :].isdigit():
            found.append((int(entry.name[len(PREFIX) :]), entry))
    return [path for _, path in sorted(found, reverse=True)]


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    model: dict[str, torch.Tensor],
    trainer: dict[str, Any],
    record: CheckpointRecord,
    ema: dict[str, torch.Tensor] | None = None,
    keep: int = 2,
) -> Path:
    """Write checkpoint `step` atomically and delete all but the newest `keep`; returns its folder.

    A file system that refuses (full, read-only) raises FileSystemError with its cause, the checkpoint's
    size and the previous checkpoint, which is intact; the half-written folder is removed."""
    folder = Path(run_dir) / CHECKPOINTS
    final = folder / f"{PREFIX}{step:08d}"
    temp = folder / f".tmp-{PREFIX}{step:08d}-{os.getpid()}"
    files = {"model.safetensors": weights_bytes(model, record)}
    if ema is not None:
        files["ema.safetensors"] = weights_bytes(ema, record)
    buffer = io.BytesIO()
    torch.save(trainer, buffer)
    files["trainer.pt"] = buffer.getvalue()
    manifest = {"format": FORMAT, "version": 1, "step": step,
                "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}}
    files["meta.json"] = json.dumps(manifest, indent=1).encode()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir()
        for name, data in files.items():
            with open(temp / name, "wb") as file:  # (created with the user's usual permissions)
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
        _fsync(temp)
        if final.exists():  # the same step written again (a run resumed from an older checkpoint)
            old = folder / f".old-{final.name}-{os.getpid()}"
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(temp, final)
        _fsync(folder)
    except Exception as error:
        number = refusal(error, temp)
        shutil.rmtree(temp, ignore_errors=True)
        if number is None:
            raise
        kept = [path for path in checkpoint_dirs(run_dir) if path != final]
        note = f"; the previous checkpoint {kept[0]} is intact" if kept else "; no earlier checkpoint was written"
        if number in NO_SPACE:
            size = sum(len(data) for data in files.values())
            message = f"{cause(number)} while writing checkpoint step {step} to {folder} (needs ~{_megabytes(size)})"
        else:
            message = f"cannot write checkpoint step {step} to {folder}: {cause(number)}"
        raise FileSystemError(message + note) from None
    for old in checkpoint_dirs(run_dir)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.0f} MB" if size >= 2**20 else f"{size / 2**20:.1f} MB"


def load_checkpoint(path: Path) -> Checkpoint:
    """Load and verify a checkpoint folder (checksums, then weights and trainer state)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        manifest = json.loads((path / "meta.json").read_text())
        files = dict(manifest["files"])
        step = int(manifest["step"])
    except (OSError, ValueError, KeyError, TypeError):
        raise CheckpointError(f"checkpoint {path} has no readable meta.json; it is incomplete or corrupt") from None
    for name, digest in files.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"checkpoint {path} is incomplete: {name} is missing")
        if _sha256(file) != digest:
            raise CheckpointError(f"checkpoint file {file} is corrupt or truncated (its checksum does not match)")
    model, record = load_weights(path / "model.safetensors")
    ema = load_weights(path / "ema.safetensors")[0] if "ema.safetensors" in files else None
    try:
        trainer = torch.load(path / "trainer.pt", map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (any unpickling failure means an unusable file)
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else type(error).__name__)
        raise CheckpointError(
            f"{path / 'trainer.pt'} cannot be loaded as trainer state ({reason}); it is corrupt or not from senet"
        ) from None
    return Checkpoint(path, step, model, trainer, record, ema)


def latest_checkpoint(run_dir: Path, *, warn: Callable[[str], None] | None = None) -> Checkpoint | None:
    """The newest checkpoint of `run_dir` that loads; damaged newer ones are reported through `warn`."""
    warn = warn or (lambda message: print(f"senet: warning: {message}", file=sys.stderr))
    candidates = checkpoint_dirs(run_dir)
    errors = []
    for path in candidates:
        try:
            return load_checkpoint(path)
        except CheckpointError as error:
            errors.append(str(error))
            warn(f"{error}; trying the previous checkpoint")
    if errors:
        raise CheckpointError(f"no checkpoint in {Path(run_dir) / CHECKPOINTS} can be loaded (newest: {errors[0]})")
    return None


def resolve_weights(path: str | Path, *, ema: bool = False) -> tuple[dict[str, Tensor], CheckpointRecord | None, Path]:
    """(state dict, record, file) from a run folder, a checkpoint folder or a .safetensors file."""
    path = Path(path).expanduser()
    if path.is_file():
        state, record = load_weights(path)
        return state, record, path
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist; give a run folder, a checkpoint folder or a .safetensors file")
    if (path / "meta.json").is_file():  # one checkpoint folder
        checkpoint = load_checkpoint(path)
        if ema and checkpoint.ema is None:
            raise CheckpointError(f"checkpoint {path} has no EMA weights (the run had no --ema-decay)")
        return (checkpoint.ema if ema else checkpoint.model), checkpoint.record, path
    final = path / ("model_ema.safetensors" if ema else "model.safetensors")
    if final.is_file():
        state, record = load_weights(final)
        return state, record, final
    candidates = checkpoint_dirs(path)
    if candidates:
        return resolve_weights(candidates[0], ema=ema)
    raise CheckpointError(f"{path} holds no {final.name} and no checkpoints/; is it a senet run folder?")
