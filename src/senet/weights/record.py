"""The checkpoint record: what senet writes beside a network's weights so that it can be rebuilt without
flags (model name and keywords, classes, preprocessing, where it came from).

It travels as JSON in the safetensors header under the key "senet" (`weights.checkpoint`). The JSON keys
are those senet has always written (format 1), so files written before the record was typed load as they
are, and keys this version does not know are kept (`extra`) and written back unchanged.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from senet.errors import SenetError

FORMAT = 1
DEFAULT_CROP_FRACTION = 0.875  # the paper's 224 / 256 (Sec. 5.1)


def plain(value: Any) -> Any:
    """Tuples to lists, recursively: what YAML and JSON hold."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


@dataclass(frozen=True)
class CheckpointRecord:
    """A trained or converted network's description (the JSON keys of format 1 in brackets where they differ).

    model, kwargs: the `create_model` call that rebuilds it. classes: the class names, in output order.
    channels, input_size: the input channels and the side it was trained at. mean, std: the per-channel
    normalisation. eval_crop_fraction: resize to size / fraction, then centre-crop (Sec. 5.1).
    interpolation: the resize filter of converted files. data, recipe: the training data and recipe of a
    senet run. source, architecture: the library and network a converted file came from. epoch, step:
    where in training the weights were saved.
    """

    model: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    classes: tuple[str, ...] | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_size: int | None = None
    eval_crop_fraction: float | None = None
    interpolation: str | None = None
    data: str | None = None
    recipe: str | None = None
    source: str = "senet"
    architecture: str | None = None
    epoch: int | None = None
    step: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def crop_fraction(self) -> float:
        """The evaluation crop fraction, the paper's 0.875 where the record names none."""
        return DEFAULT_CROP_FRACTION if self.eval_crop_fraction is None else float(self.eval_crop_fraction)

    def replace(self, **changes: Any) -> CheckpointRecord:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of format 1 (keys whose value is None are left out)."""
        out: dict[str, Any] = {"format": FORMAT}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name == "extra" or value is None:
                continue
            out[item.name] = plain(dict(value) if isinstance(value, Mapping) else value)
        return out | plain(dict(self.extra))

    def to_json(self) -> str:
        return json.dumps(self.as_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "the checkpoint") -> CheckpointRecord:
        """The record of a format-1 JSON object; SenetError if it names no model or has wrong types."""
        if not isinstance(data, Mapping) or not isinstance(data.get("model"), str):
            raise SenetError(f"{where} has senet metadata without a model name; it is damaged or not from senet")
        names = {item.name for item in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names and k != "format"}
        try:
            for key in ("classes", "mean", "std"):
                if known.get(key) is not None:
                    known[key] = tuple(known[key])
            if not isinstance(known.get("kwargs", {}), Mapping):
                raise TypeError("kwargs")
            known["kwargs"] = dict(known.get("kwargs", {}))
        except TypeError:
            raise SenetError(f"{where} has senet metadata of the wrong form; it is damaged or not from senet") from None
        return cls(**known, extra=extra)

    @classmethod
    def from_json(cls, text: str, where: str = "the checkpoint") -> CheckpointRecord:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise SenetError(f"{where} has unreadable senet metadata") from None
        return cls.from_dict(data, where)
