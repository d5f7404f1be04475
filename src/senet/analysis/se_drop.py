"""`senet analyze se-drop`: how much each SE block matters at test time (paper Sec. 7.2).

The paper observes that the last stage's SE blocks saturate (s near 1) and that removing them costs
little accuracy (< 0.1% top-5 on ImageNet) while saving most of SE's extra parameters. This evaluates a
trained network as it is, then with the SE blocks of each stage switched off in turn, then cumulatively
from the last block back (the last block, the last two, ... every block). Switched off means s := 1
(`replace="one"`: the block is the identity, x * 1 = x) or s := its per-channel mean over the data
(`replace="mean"`: a constant scale). Nothing is retrained. Every evaluation is `senet eval`'s own
(`engine.evaluate.evaluate` over `eval_pipeline`), so the intact row is exactly what `senet eval` reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from senet.analysis.complexity import count_params, stage_numbers
from senet.analysis.excitation import (
    excitation_values,
    override_excitation,
    progress_bar,
    se_block_paths,
    select_blocks,
)
from senet.engine.distributed import DistEnv, resolve_device
from senet.engine.evaluate import eval_pipeline, evaluate, result_row
from senet.errors import check_choice
from senet.interop.load import load_for_evaluation
from senet.layers import SqueezeExcitation

from senet.options import REPLACEMENTS


@dataclass
class DropRow:
    """One evaluation: the SE blocks switched off (`removed`, a label; `blocks`, their names), errors in %,
    their change against the intact network (percentage points) and the parameters those blocks hold."""

    kind: str  # "none", "stage" or "cumulative"
    removed: str
    blocks: list[str]
    top1_err: float
    top5_err: float
    loss: float
    d_top1: float
    d_top5: float
    params: int
    params_share: float  # of the whole network's parameters


@dataclass
class DropStudy:
    model: str
    checkpoint: str
    data: str
    images: int
    replace: str
    params: int
    rows: list[DropRow]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        """The table `senet analyze se-drop` prints."""
        value = "1" if self.replace == "one" else "its mean over the data"
        lines = [
            f"{self.model} on {self.data} ({self.images} images), SE blocks switched off with s := {value}",
            f"{'removed':34s} {'top-1 err':>9s} {'change':>7s} {'top-5 err':>9s} {'change':>7s} {'SE params':>10s} {'share':>6s}",
        ]
        for row in self.rows:
            lines.append(
                f"{row.removed[:34]:34s} {row.top1_err:8.2f}% {row.d_top1:+7.2f} {row.top5_err:8.2f}% {row.d_top5:+7.2f} "
                f"{row.params:10,d} {100 * row.params_share:5.2f}%"
            )
        lines.append(f"(changes in percentage points against the intact network; share: of all {self.params:,d} parameters)")
        return "\n".join(lines)


def stage_groups(model: nn.Module) -> dict[str, list[str]]:
    """{stage label: its SE blocks' names} in network order; a stage is a top-level module (as `senet info`
    lists them), labelled with its paper number where the family has one (`stage 5 (layer4)`)."""
    numbers = stage_numbers(model)
    groups: dict[str, list[str]] = {}
    for name, path in se_block_paths(model).items():
        top = path.split(".")[0]
        label = f"stage {numbers[top]} ({top})" if top in numbers else top
        groups.setdefault(label, []).append(name)
    return groups


def cumulative_groups(names: Sequence[str]) -> dict[str, list[str]]:
    """{label: blocks} removing the last block, the last two, ... every block (Sec. 7.2: from the end back)."""
    groups = {}
    for count in range(1, len(names) + 1):
        tail = list(names[-count:])
        label = tail[0] if count == 1 else f"{tail[0]} .. {tail[-1]}"
        groups[f"{label} ({count} block{'s' if count > 1 else ''})"] = tail
    return groups


def record_excitation_sums(blocks: dict[str, SqueezeExcitation]) -> tuple[dict[str, list[Tensor]], list[Any]]:
    """Hooks recording each block's s summed over each batch, (C,) a batch, while the network runs: (records, handles).
    The records stay on the device (reading one waits for it): `torch.stack(records[name]).cpu()` after the run."""
    records: dict[str, list[Tensor]] = {name: [] for name in blocks}

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            records[name].append(excitation_values(output).double().sum(0))  # summed over the batch

        return record

    return records, [block.gate.register_forward_hook(hook(name)) for name, block in blocks.items()]


def se_drop_study(
    checkpoint: str | Path,
    data: str | None = None,
    *,
    replace: str = "one",
    batch_size: int = 128,
    workers: int = 4,
    device: str = "auto",
    amp: str = "none",
    input_size: int | None = None,
    ema: bool = False,
    progress: bool = True,
) -> DropStudy:
    """The intact network, each stage's SE switched off, and the SE of the last blocks switched off
    cumulatively, each evaluated as `senet eval` evaluates (Sec. 7.2)."""
    check_choice("--replace", replace, REPLACEMENTS)
    torch_device = resolve_device(device, DistEnv())
    model, record, source = loaded = load_for_evaluation(checkpoint, ema=ema)
    blocks = select_blocks(model, None, what=f"{source} ({record.model})")  # before reading any data
    pipeline = eval_pipeline(loaded, data, input_size=input_size, batch_size=batch_size, workers=workers,
                             device=torch_device)
    images = len(pipeline.loader.sampler)
    groups = [("stage", label, names) for label, names in stage_groups(model).items()]
    groups += [("cumulative", label, names) for label, names in cumulative_groups(list(blocks)).items()]
    total = count_params(model)

    def run(label: str) -> dict[str, Any]:
        loader = progress_bar(pipeline.loader, images, label, disable=not progress)
        return result_row(evaluate(model, loader, pipeline.normalize, amp=amp))

    records, handles = record_excitation_sums(blocks) if replace == "mean" else ({}, [])
    try:
        intact = run("intact")
    finally:
        for handle in handles:
            handle.remove()
    means = {name: torch.stack(records[name]).cpu().sum(0) / intact["images"] for name in records}
    rows = [DropRow("none", "nothing (intact)", [], intact["top1_err"], intact["top5_err"], intact["loss"], 0.0, 0.0, 0, 0.0)]
    for kind, label, names in groups:
        values = {blocks[name]: (1.0 if replace == "one" else means[name].float()) for name in names}
        with override_excitation(values):
            result = run(label)
        params = sum(count_params(blocks[name]) for name in names)
        rows.append(DropRow(
            kind, label, list(names), result["top1_err"], result["top5_err"], result["loss"],
            round(result["top1_err"] - intact["top1_err"], 4), round(result["top5_err"] - intact["top5_err"], 4),
            params, round(params / total, 6),
        ))
    return DropStudy(record.model, str(pipeline.source), pipeline.data, intact["images"], replace, total, rows)
