"""PNG figures with matplotlib's Agg renderer (no display, no global backend switch): training curves and
per-class excitation per SE block (the paper's Figs. 6 and 7)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from senet.weights.checkpoint import atomic_write


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Any, path: Path) -> None:
    """Write `figure` as a PNG, atomically (a full or read-only disk: one line, and no half-written file)."""
    atomic_write(path, lambda temp: figure.savefig(temp, format="png"))


def plot_training_curves(runs: Mapping[str, Sequence[Mapping[str, Any]]], path: str | Path) -> Path:
    """Training loss, validation loss and validation top-1 error per epoch of each run (metrics.jsonl rows)."""
    figure = _figure(13, 3.8)
    panels = [("train_loss", "training loss", True), ("val_loss", "validation loss", True), ("val_top1_err", "val top-1 error (%)", False)]
    axes = figure.subplots(1, len(panels))
    for axis, (key, title, log_scale) in zip(axes, panels):
        for name, rows in runs.items():
            points = [(row["epoch"], row[key]) for row in rows if row.get(key) is not None]
            if points:
                axis.plot(*zip(*points), marker="o", markersize=3, label=name)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        if log_scale:
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
    axes[-1].legend()
    figure.tight_layout()
    path = Path(path)
    save_figure(figure, path)
    return path


def block_axes(count: int, title: str, *, sharey: bool = False) -> tuple[Any, Any]:
    """A figure with one panel per block (three to a row, four from ten blocks on), the surplus panels hidden;
    `sharey`: one y-scale for all panels, so that blocks compare at a glance."""
    columns = min(3 if count < 10 else 4, count)
    rows = math.ceil(count / columns)
    figure = _figure(4.2 * columns, 2.9 * rows)
    axes = figure.subplots(rows, columns, squeeze=False, sharey=sharey).ravel()
    for axis in axes[count:]:
        axis.set_visible(False)
    if title:
        figure.suptitle(title, fontsize=11)
    figure.senet_columns, figure.senet_title = columns, bool(title)
    return figure, axes


def finish_block_figure(figure: Any, axes: Any, path: str | Path, ylabel: str) -> Path:
    """Label (the first panel of each row), legend (below the panels) and save a `block_axes` figure to `path`;
    the title keeps its own band above the panels."""
    for axis in axes[:: getattr(figure, "senet_columns", 1)]:
        axis.set_ylabel(ylabel, fontsize=8)
        axis.tick_params(labelleft=True)
    handles, labels = axes[0].get_legend_handles_labels()
    height = figure.get_size_inches()[1]
    figure.legend(handles, labels, loc="lower center", ncol=min(11, len(labels)), fontsize=7, frameon=False)
    top = 1 - 0.45 / height if getattr(figure, "senet_title", False) else 1
    figure.tight_layout(rect=(0, 0.35 / height, 1, top))
    path = Path(path)
    save_figure(figure, path)
    return path


def plot_ablation(
    studies: Mapping[str, Sequence[tuple[str, tuple[float, float] | None, tuple[float, float] | None]]],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """One panel per study: top-1 and top-5 error per variant, mean with ± one standard deviation as bars.

    `studies[name]` is a list of (variant label, (top-1 mean, std) or None, (top-5 mean, std) or None);
    a std of NaN (one seed) draws no bar, a variant with no finished run no point.
    """
    figure = _figure(max(4.5, 1.0 + 0.9 * max((len(rows) for rows in studies.values()), default=1)), 3.4 * len(studies))
    axes = figure.subplots(len(studies), 1, squeeze=False).ravel()
    for axis, (study, rows) in zip(axes, studies.items()):
        for offset, which, marker, name in ((-0.08, 1, "o", "top-1"), (0.08, 2, "s", "top-5")):
            points = [(i + offset, row[which]) for i, row in enumerate(rows) if row[which] is not None]
            if points:
                xs = [x for x, _ in points]
                means = [value[0] for _, value in points]
                stds = [0.0 if math.isnan(value[1]) else value[1] for _, value in points]
                axis.errorbar(xs, means, yerr=stds, fmt=marker, capsize=4, markersize=5, label=f"{name} error")
        axis.set_xticks(range(len(rows)))
        axis.set_xticklabels([row[0] for row in rows], fontsize=8)
        axis.set_ylabel("validation error (%)", fontsize=8)
        axis.set_title(study, fontsize=9)
        axis.tick_params(labelsize=7)
        axis.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path = Path(path)
    save_figure(figure, path)
    return path
