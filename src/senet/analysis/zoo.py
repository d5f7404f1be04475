"""The reports of `senet models` and `senet info`: every registered model's size and cost, and one model's
complexity with its SE overhead and a per-stage table (stages numbered as the family declares them).

Every model is built on the meta device and counted over shapes (`complexity`): nothing is allocated or
computed. Building is what costs (about 0.1-0.5 s for each large network, 4-7 s for the 68 registered ones
on a 2-core machine), so `senet models` reads the registered models' counts, constants of the code at
their default keywords, from zoo.json beside this module; the test suite checks that file against a live
count of every model (`write_zoo_table` rewrites it; `make readme` calls it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from senet.analysis.complexity import Complexity, complexity, stage_numbers
from senet.errors import SenetError
from senet.interop.retrofit import add_se
from senet.models import create_model, is_se_model, list_models, plain_twin
from senet.models.registry import SE_KWARGS, resolve_name

# The create_model keywords an SE model shares with its plain twin (the architecture, not the SE variant).
TWIN_KWARGS = ("layout", "num_classes", "in_chans")
# The input, parameters and MACs of every registered model at its default keywords (see the docstring).
ZOO_TABLE = Path(__file__).with_name("zoo.json")


def counting_model(name: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Model `name` built on the meta device: complexity needs shapes, not weights."""
    with torch.device("meta"):
        return create_model(name, **(kwargs or {}))


def human_count(value: int) -> str:
    """A count with three significant digits and a k / M / G suffix: 28.1M, 2.53M, 3.07k, 640."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:d}"


def _size(shape: Any) -> str:
    return "x".join(str(s) for s in shape)


# ---------------------------------------------------------------------------------------------------
# senet models


def _counts(name: str) -> dict[str, Any]:
    """The input, parameters and MACs of registered model `name` at its default keywords, counted now."""
    stats = complexity(counting_model(name))
    return {"input": list(stats.input_size), "params": stats.params, "macs": stats.macs}


def model_rows(pattern: str = "*", *, live: bool = False) -> list[dict[str, Any]]:
    """One row per registered model matching `pattern`: name, SE or not, plain twin, input, params, GMACs.

    The counts come from zoo.json where it has the model (unless `live`), else they are counted now (a
    model registered outside senet)."""
    table = {} if live or not ZOO_TABLE.is_file() else json.loads(ZOO_TABLE.read_text())
    rows = []
    for name in list_models(pattern):
        counts = table.get(name) or _counts(name)
        rows.append(
            {
                "model": name,
                "se": is_se_model(name),
                "plain_twin": plain_twin(name),
                **counts,
                "gmacs": round(counts["macs"] / 1e9, 4),  # (for reading; tables print macs, rounded once)
            }
        )
    return rows


def write_zoo_table(path: Path = ZOO_TABLE) -> Path:
    """Count every registered model now and write the counts `model_rows` reads to `path`."""
    table = {name: _counts(name) for name in list_models()}
    path.write_text("{\n" + ",\n".join(f"{json.dumps(name)}: {json.dumps(row)}" for name, row in table.items()) + "\n}\n")
    return path


def format_model_rows(rows: list[dict[str, Any]]) -> str:
    """`senet models`' table: one line a model, its input, params, GMACs and plain twin."""
    lines = [f"{'model':24s} {'input':>13s} {'params':>9s} {'GMACs':>8s}  plain twin"]
    for row in rows:
        twin = row["plain_twin"] if row["se"] else ""
        lines.append(f"{row['model']:24s} {_size(row['input']):>13s} {row['params'] / 1e6:8.2f}M {row['macs'] / 1e9:8.3f}  {twin}")
    lines.append(f"{len(rows)} models; GMACs = multiply-accumulates (the paper's 'GFLOPs') at the input shown")
    return "\n".join(lines)


def markdown_twin_table(rows: list[dict[str, Any]]) -> str:
    """Each plain model beside its SE twin: the README's model table."""
    by_name = {row["model"]: row for row in rows}
    lines = ["| plain model | SE model | input | params | SE params | GMACs | SE GMACs |", "|---|---|---|---:|---:|---:|---:|"]
    for row in rows:
        if row["se"]:
            continue
        twin = next((r for r in rows if r["se"] and r["plain_twin"] == row["model"]), None)
        se_cells = (f"`{twin['model']}`", f"{twin['params'] / 1e6:.2f}M", f"{twin['macs'] / 1e9:.3f}") if twin else ("", "", "")
        lines.append(
            f"| `{row['model']}` | {se_cells[0]} | {_size(row['input'])} | {row['params'] / 1e6:.2f}M | {se_cells[1]} "
            f"| {row['macs'] / 1e9:.3f} | {se_cells[2]} |"
        )
    orphans = [r for r in rows if r["se"] and r["plain_twin"] not in by_name]
    for row in orphans:
        lines.append(f"| | `{row['model']}` | {_size(row['input'])} | | {row['params'] / 1e6:.2f}M | | {row['macs'] / 1e9:.3f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# senet info


@dataclass
class ModelReport:
    """One model's complexity (`stats`), its plain twin's (SE models), its stage numbers, and the summary
    of `add_se` where SE was retrofitted."""

    model: str
    kwargs: dict[str, Any]
    stats: Complexity
    numbers: dict[str, int]
    twin: Complexity | None = None
    se_summary: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """`senet info --json`."""
        out = {"model": self.model, "kwargs": self.kwargs, **({"add_se": True} if self.se_summary else {}), **self.stats.as_dict()}
        if self.twin is not None:
            out["plain_twin"] = {"model": plain_twin(resolve_name(self.model)[0]), "params": self.twin.params, "macs": self.twin.macs}
        return out

    def format(self) -> str:
        """`senet info`'s report: totals, SE overhead, the plain twin, one line a stage."""
        stats, kwargs = self.stats, self.kwargs
        lines = [self.se_summary] if self.se_summary else []
        lines.append(f"{self.model}  input {_size(stats.input_size)}"
                     + (f"  ({', '.join(f'{k}={v}' for k, v in kwargs.items())})" if kwargs else ""))
        lines.append(f"  params  {stats.params / 1e6:8.2f}M   ({stats.params:,d})")
        lines.append(f"  GMACs   {stats.gmacs:8.3f}    ({stats.macs:,d})")
        if stats.se_blocks:
            lines.append(
                f"  SE      {stats.se_blocks} blocks, {human_count(stats.se_params)} params (+{100 * stats.se_param_overhead:.2f}%), "
                f"{human_count(stats.se_macs)} MACs (+{100 * stats.se_mac_overhead:.2f}%)"
            )
        if self.twin is not None:
            lines.append(f"  plain twin {plain_twin(resolve_name(self.model)[0])}: {self.twin.params / 1e6:.2f}M params, {self.twin.gmacs:.3f} GMACs")
        lines.append("")
        # Stages as --se-stages numbers them (ResNet: layer1 .. layer4 are 2 .. 5, conv2_x .. conv5_x).
        lines.append(f"  {'stage':16s} {'output':>16s} {'params':>9s} {'SE params':>9s} {'MACs':>9s} {'SE MACs':>9s} {'SE':>4s}")
        for stage in stats.stages:
            if stage.params == 0 and stage.macs == 0:
                continue  # pooling, dropout
            label = f"{self.numbers[stage.name]} ({stage.name})" if stage.name in self.numbers else stage.name
            lines.append(
                f"  {label:16s} {_size(stage.output_shape):>16s} {human_count(stage.params):>9s} {human_count(stage.se_params):>9s} "
                f"{human_count(stage.macs):>9s} {human_count(stage.se_macs):>9s} {stage.se_blocks:4d}"
            )
        return "\n".join(lines)


def model_report(name: str, kwargs: dict[str, Any], *, input_size: int | None = None, retrofit: bool = False) -> ModelReport:
    """`senet info NAME`: the complexity of `create_model(name, **kwargs)` at `input_size` (default: its own);
    with `retrofit`, of the plain model `name` with SE added by `add_se` (the SE keywords as its options)."""
    shown_name = name
    name, alias_kwargs = resolve_name(name)  # timm's names (`seresnet50`) are senet networks with keywords
    kwargs = alias_kwargs | dict(kwargs)
    architecture = {k: v for k, v in kwargs.items() if k not in SE_KWARGS}  # (the rest: SE variant keywords)
    summary = None
    if retrofit:  # the cost of SE retrofitted with senet.add_se (its defaults: the family's SE twin's)
        if is_se_model(name):
            raise SenetError(
                f"{name} already has SE blocks; --add-se adds SE to a plain model: drop --add-se, "
                f"or use its plain twin ('senet info {plain_twin(name)} --add-se')"
            )
        # The SE keywords are add_se's options (its keywords are SEConfig's field names), the rest create_model's.
        model = counting_model(name, architecture)
        summary = add_se(model, **{SE_KWARGS[k]: kwargs[k] for k in kwargs if k in SE_KWARGS}).se_report.summary
    else:
        model = counting_model(name, kwargs)
    twin = None
    if is_se_model(name):
        twin = complexity(counting_model(plain_twin(name), {k: v for k, v in kwargs.items() if k in TWIN_KWARGS}), input_size)
    return ModelReport(shown_name, kwargs, complexity(model, input_size), stage_numbers(model), twin, summary)
