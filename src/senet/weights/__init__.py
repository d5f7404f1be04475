"""Weights I/O, the bottom of senet's data flow above the models: reading and writing weights files.

`checkpoint`: senet's own files (safetensors with senet's metadata in the header, atomic writes, run and
checkpoint folders); `files`: any weights file from anywhere, read safely (`torch.load(weights_only=True)`
with an allowlist, foreign training checkpoints unwrapped, hub folders, junk refused). This package imports
only `senet.errors`, `senet.models` and `senet.layers`; engine/, interop/ and analysis/ read and write
weights through it.
"""

from senet.weights.checkpoint import (
    Checkpoint,
    CheckpointError,
    atomic_write,
    checkpoint_dirs,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    read_weights_meta,
    resolve_weights,
    save_checkpoint,
    save_weights,
)
from senet.weights.files import WeightsFile, WeightsFileError, read_weights, safe_torch_load

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "WeightsFile",
    "WeightsFileError",
    "atomic_write",
    "checkpoint_dirs",
    "latest_checkpoint",
    "load_checkpoint",
    "load_weights",
    "read_weights",
    "read_weights_meta",
    "resolve_weights",
    "safe_torch_load",
    "save_checkpoint",
    "save_weights",
]
