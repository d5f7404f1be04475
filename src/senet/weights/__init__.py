"""Weights I/O, the bottom of senet's data flow above the models: reading and writing weights files.

`record`: the typed checkpoint record (model, keywords, classes, preprocessing) senet writes beside the
weights. `checkpoint`: senet's own files (safetensors with the record in the header, atomic writes, run
and checkpoint folders). `files`: any weights file from anywhere, read safely (`torch.load(weights_only=True)`
with an allowlist, foreign training checkpoints unwrapped, hub folders, junk refused). `state`: one strict
load into a network and one error for a state dict that does not fit. This package imports only
`senet.errors`, `senet.models` and `senet.layers`; engine/, interop/ and analysis/ read and write weights
through it.
"""

from senet.weights.checkpoint import (
    Checkpoint,
    CheckpointError,
    atomic_write,
    checkpoint_dirs,
    latest_checkpoint,
    load_checkpoint,
    load_weights,
    read_record,
    resolve_weights,
    save_checkpoint,
    save_weights,
)
from senet.weights.files import WeightsFile, WeightsFileError, read_weights, safe_torch_load
from senet.weights.record import CheckpointRecord, plain
from senet.weights.state import StateDictMismatchError, load_strict, state_dict_mismatch

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "CheckpointRecord",
    "StateDictMismatchError",
    "WeightsFile",
    "WeightsFileError",
    "atomic_write",
    "checkpoint_dirs",
    "latest_checkpoint",
    "load_checkpoint",
    "load_strict",
    "load_weights",
    "plain",
    "read_record",
    "read_weights",
    "resolve_weights",
    "safe_torch_load",
    "save_checkpoint",
    "save_weights",
    "state_dict_mismatch",
]
