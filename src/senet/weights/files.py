"""Reading weight files from anywhere, safely: what a file holds, before anyone says which network it is.

Forms read (`read_weights`):

- senet's own run folders, checkpoint folders and .safetensors files (their header's record names the model);
- hub folders: `config.json` beside `model.safetensors` or `pytorch_model.bin`;
- `.safetensors` files written by other libraries;
- `torch.save` files (`.pth`, `.pt`, `.bin`, `.pth.tar`, `.ckpt`, `.pkl`): a bare state dict, one with a DDP
  `module.` (or torch.compile `_orig_mod.`) prefix, or a training checkpoint holding it under
  `state_dict`, `state_dict_ema`, `model`, ... (timm's train.py also stores its `argparse.Namespace`).

Nothing is unpickled beyond `torch.load(weights_only=True)`, which rebuilds tensors and plain containers
only, with an allowlist of the plain types training checkpoints carry (`argparse.Namespace`, numpy
scalars, dtypes and arrays). A file that wants anything else, an HTML page saved under a checkpoint's
name, an empty or truncated file, a zip that is not a torch file: each raises a one-line `WeightsFileError`
that says what the file is and how to get a good one. Nothing in the file is ever executed.
"""

from __future__ import annotations

import argparse
import json
import re
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from senet.weights.checkpoint import CheckpointError, load_weights, resolve_weights
from senet.weights.record import CheckpointRecord
from senet.errors import SenetError

HUB_CONFIG = "config.json"
HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# Where training scripts keep the weights inside a checkpoint, in the order they are looked for (the EMA
# weights first when asked for). timm: state_dict / state_dict_ema; many scripts: model, model_state_dict.
STATE_KEYS = ("state_dict", "model", "model_state_dict", "net", "network", "weights")
EMA_KEYS = ("state_dict_ema", "model_ema", "ema_state_dict", "ema")
# Prefixes that wrappers add to every key: DistributedDataParallel / DataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class WeightsFileError(CheckpointError):
    """A weights file that cannot be read: missing, empty, truncated, not a checkpoint, or unsafe."""


@dataclass
class WeightsFile:
    """What a weights file holds: its state dict and whatever describes it.

    record: senet's checkpoint record (model name and keywords, classes, preprocessing) for files senet
    wrote, else None.
    config: a hub folder's config.json, else None. note: how the weights were found (for messages).
    """

    path: Path
    state_dict: dict[str, Tensor]
    record: CheckpointRecord | None = None
    config: dict[str, Any] | None = None
    note: str = ""


def _safe_globals() -> list[Any]:
    """The plain types a training checkpoint may carry besides tensors: timm's argparse.Namespace of the
    command line, numpy scalars (a metric), dtypes and arrays."""
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    dtype_classes = [type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32,
                                                 np.int64, np.uint8, np.bool_, np.str_, np.object_)]
    return [argparse.Namespace, multiarray.scalar, multiarray._reconstruct, np.ndarray, np.dtype, *dtype_classes]


def safe_torch_load(path: Path) -> Any:
    """`torch.load(path, weights_only=True)` with the allowlist of `_safe_globals`; any failure -> WeightsFileError."""
    path = Path(path)
    check_not_junk(path)
    try:
        with torch.serialization.safe_globals(_safe_globals()), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (pickle protocol notes: a failure is reported below)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001  (every unpickling failure means an unusable file)
        raise WeightsFileError(_load_failure(path, error)) from None


def _load_failure(path: Path, error: Exception) -> str:
    """One line saying why torch.load refused or failed on `path`."""
    text = str(error)
    wanted = re.search(r"GLOBAL ([\w.]+)", text)
    if wanted:
        return (
            f"{path} wants to unpickle {wanted.group(1)}, which is not a tensor or plain data; senet never runs "
            "code from a checkpoint. Save the weights alone (torch.save(model.state_dict(), ...)) or as .safetensors"
        )
    if zipfile.is_zipfile(path) or "zip archive" in text or "central directory" in text or "EOF" in text or "truncated" in text:
        return f"{path} is truncated or corrupt ({_first_line(text)}); download or copy it again"
    if "Unsupported operand" in text or "protocol" in text:
        return (
            f"{path} is a plain Python pickle, not a torch.save file, and senet does not unpickle those; "
            "re-save the weights with torch.save(state_dict, ...) or as .safetensors"
        )
    return f"{path} cannot be read as a torch.save file ({_first_line(text)}); it is corrupt or not a checkpoint"


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else "unknown error")[:160]


def check_not_junk(path: Path) -> None:
    """Raise WeightsFileError for files that cannot be weights: empty, an HTML page, a zip that is not torch's."""
    size = path.stat().st_size
    if size == 0:
        raise WeightsFileError(f"{path} is empty (0 bytes): the download or copy failed; fetch the file again")
    with open(path, "rb") as file:
        head = file.read(1024)
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml", b"<!--")) or (text.startswith(b"<") and b"<html" in text):
        raise WeightsFileError(
            f"{path} is an HTML page ({size} bytes), not a checkpoint: a failed download (an error or login page); "
            "download the file itself again (on a hub, the raw 'resolve' link)"
        )
    if text.startswith((b"version https://git-lfs", b"version https://hawser")):
        raise WeightsFileError(f"{path} is a Git LFS pointer, not the weights; fetch the file itself (git lfs pull)")
    if head.startswith(b"PK\x03\x04"):
        try:
            names = zipfile.ZipFile(path).namelist()
        except (zipfile.BadZipFile, OSError):
            raise WeightsFileError(f"{path} is a truncated or corrupt zip archive; download or copy it again") from None
        if not any(name.endswith("data.pkl") for name in names):
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise WeightsFileError(
                f"{path} is a zip archive ({shown}) but not a torch.save file (no data.pkl); unpack it and give the checkpoint inside"
            )


def is_safetensors(path: Path) -> bool:
    """Whether `path` looks like safetensors: an 8-byte header length, then a JSON header."""
    with open(path, "rb") as file:
        head = file.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return int.from_bytes(head[:8], "little") < path.stat().st_size


# ---------------------------------------------------------------------------------------------------


def read_weights(path: str | Path, *, ema: bool = False) -> WeightsFile:
    """The state dict of any file or folder of the module docstring, with its metadata or hub config.

    ema: take the EMA weights (senet's model_ema, a checkpoint's state_dict_ema) where the file has them.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsFileError(
            f"checkpoint {path} does not exist; give a senet run or checkpoint folder, a hub folder (config.json + weights) "
            "or a weights file (.safetensors, .pth, .pt, .bin)"
        )
    if path.is_dir():
        if (path / HUB_CONFIG).is_file():
            return _read_hub_folder(path, ema=ema)
        state, record, file = resolve_weights(path, ema=ema)
        return WeightsFile(file, state, record)
    check_not_junk(path)
    if is_safetensors(path):
        state, record = load_weights(path)
        return WeightsFile(path, state, record)
    if path.suffix == ".safetensors":
        raise WeightsFileError(f"{path} is not a readable safetensors file (its header is damaged); download or copy it again")
    state, note = unwrap_checkpoint(safe_torch_load(path), path, ema=ema)
    return WeightsFile(path, state, note=note)


def _read_hub_folder(path: Path, *, ema: bool) -> WeightsFile:
    try:
        config = json.loads((path / HUB_CONFIG).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsFileError(f"{path / HUB_CONFIG} is not readable JSON ({error}); download it again") from None
    if not isinstance(config, dict):
        raise WeightsFileError(f"{path / HUB_CONFIG} is not a JSON object; is {path} a model folder?")
    for name in HUB_WEIGHTS:
        if (path / name).is_file():
            weights = read_weights(path / name, ema=ema)
            weights.config = config
            return weights
    raise WeightsFileError(f"hub folder {path} has {HUB_CONFIG} but no {' or '.join(HUB_WEIGHTS)}; download the weights too")


def unwrap_checkpoint(obj: Any, path: Path, *, ema: bool = False) -> tuple[dict[str, Tensor], str]:
    """(state dict, how it was found) from what torch.load returned: the dict of tensors itself or the one
    a training checkpoint keeps under a known key, with wrapper prefixes (`module.`) removed."""
    note = ""
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        keys = (EMA_KEYS + STATE_KEYS) if ema else (STATE_KEYS + EMA_KEYS)
        found = next((k for k in keys if isinstance(obj.get(k), Mapping) and _is_state_dict(obj[k])), None)
        if found is None:
            shown = ", ".join(repr(k) for k in list(obj)[:8])
            raise WeightsFileError(
                f"{path} holds a dict ({shown}) with no state dict of tensors under "
                f"{', '.join(STATE_KEYS + EMA_KEYS)}; save model.state_dict() itself"
            )
        if ema and found not in EMA_KEYS:
            raise WeightsFileError(f"{path} has no EMA weights (looked for {', '.join(EMA_KEYS)}); drop --ema")
        obj, note = obj[found], f"the checkpoint's {found!r}"
    if not isinstance(obj, Mapping) or not _is_state_dict(obj):
        kind = type(obj).__name__
        raise WeightsFileError(f"{path} holds a {kind}, not a state dict of tensors; save model.state_dict() itself")
    state = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    for prefix in WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
            note = (note + f", {prefix!r} prefix removed").lstrip(", ")
    return state, note


def _is_state_dict(obj: Mapping[Any, Any]) -> bool:
    """A mapping of names to tensors (a few non-tensor entries, such as a version number, are tolerated)."""
    if not obj:
        return False
    tensors = sum(isinstance(v, Tensor) for v in obj.values())
    return tensors > 0 and tensors >= 0.5 * len(obj) and all(isinstance(k, str) for k in obj)
