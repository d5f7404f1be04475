"""The role of excitation (paper Sec. 7.2, Figs. 6-7): the excitation s of every SE block, per class.

Forward hooks on each SE block's gate see the excitation s it computes; averaging over the images of
each class gives the per-class channel profiles the paper plots (Fig. 6) and their spread over the images
of one class (Fig. 7). Early blocks are expected to be class-agnostic and later ones class-specific, the
last ones saturating near 1. `override_excitation` replaces s by a constant (Sec. 7.2: the SE blocks of
the last stage switched off), and `excitation_study` is `senet analyze excitation`.

Both SE implementations (`senet.layers.merge`) call the block's gate as a module on the pre-gate
logits: the naive one on (N, C, 1, ...), the fused one on (N, C); a hook on the gate so sees (and may
replace) s in either.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from senet.analysis.plots import block_axes, finish_block_figure
from senet.engine.distributed import DistEnv, resolve_device
from senet.engine.evaluate import device_batches, eval_pipeline
from senet.errors import ConfigError, did_you_mean
from senet.interop.load import load_for_evaluation
from senet.layers import SqueezeExcitation, se_impl
from senet.options import PAPER_CHANNELS, PAPER_IMAGES_PER_CLASS
from senet.weights.checkpoint import atomic_write
from senet.weights.lock import FolderLock

# Gate values beyond these count as saturated (a sigmoid gate's s near 1 passes the channel unchanged).
SATURATION_HIGH, SATURATION_LOW = 0.99, 0.01
RESULTS = ("excitation.json", "excitation.png", "excitation_spread.png")


def paper_block_name(module_path: str) -> str:
    """`layer2.3.se` -> `SE_3_4` (stage conv3_x, block 4), the paper's naming (ResNet-style models, and
    ShuffleNet's `stage2.0.se` -> `SE_2_1`); other paths are kept."""
    match = re.fullmatch(r"layer(\d+)\.(\d+)\.se", module_path)
    if match is not None:
        return f"SE_{int(match.group(1)) + 1}_{int(match.group(2)) + 1}"
    match = re.fullmatch(r"stage(\d+)\.(\d+)\.se", module_path)
    if match is not None:
        return f"SE_{int(match.group(1))}_{int(match.group(2)) + 1}"
    return module_path


def se_block_paths(model: nn.Module) -> dict[str, str]:
    """{paper name: module path} of every SE block of `model`, in network order."""
    return {paper_block_name(name): name for name, module in model.named_modules() if isinstance(module, SqueezeExcitation)}


def se_blocks(model: nn.Module) -> dict[str, SqueezeExcitation]:
    """Every SE block of `model` by its paper name (SE_stage_block for ResNet-style models), in network order."""
    return {paper_block_name(name): module for name, module in model.named_modules() if isinstance(module, SqueezeExcitation)}


def select_blocks(model: nn.Module, names: Sequence[str] | str | None, *, what: str = "the model") -> dict[str, SqueezeExcitation]:
    """The SE blocks named (paper names or module paths; None or "all": every one), in network order.

    ConfigError for a model without SE blocks or a name it does not have (the message lists the valid names)."""
    blocks = se_blocks(model)
    if not blocks:
        raise ConfigError(
            f"{what} has no SE blocks (no SqueezeExcitation modules) to analyse; give a checkpoint of an SE model "
            "(`senet models 'se_*'`), or retrofit SE with senet.add_se and fine-tune it first"
        )
    if names is None or names == "all" or list(names) == ["all"]:
        return blocks
    names = [names] if isinstance(names, str) else list(names)
    paths = {path: name for name, path in se_block_paths(model).items()}
    chosen = []
    for name in names:
        name = paths.get(name, name)
        if name not in blocks:
            raise ConfigError(f"{what} has no SE block {name!r}{did_you_mean(name, blocks)}; its SE blocks are: "
                              f"{', '.join(blocks)} (or all)")
        chosen.append(name)
    return {name: block for name, block in blocks.items() if name in chosen}


def excitation_values(gate_output: Tensor) -> Tensor:
    """s as (N, C): the gate's output of either SE implementation, averaged over positions where it has them
    (squeeze="none")."""
    return gate_output.detach().reshape(gate_output.shape[0], gate_output.shape[1], -1).mean(2)


@contextlib.contextmanager
def override_excitation(values: Mapping[SqueezeExcitation, float | Tensor]) -> Iterator[None]:
    """Within the block, each SE block's excitation s is replaced by the value given: a number (1 switches
    the block off, x * 1 = x) or a (C,) tensor of per-channel constants (e.g. s averaged over the data).

    Paper Sec. 7.2 (removing the SE blocks of the last stage). Works for both SE implementations (a forward
    hook on the block's gate returns the replacement); the blocks are restored on leaving."""

    def replace_with(value: float | Tensor):
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
            if isinstance(value, Tensor):
                shape = (1, output.shape[1]) + (1,) * (output.dim() - 2)
                return value.to(output.device, output.dtype).view(shape).expand_as(output)
            return torch.full_like(output, value)

        return hook

    handles = [block.gate.register_forward_hook(replace_with(value)) for block, value in values.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class ExcitationStats:
    """Excitation statistics per SE block: `per_class[block]` and `per_class_std[block]` are (num_classes, C),
    the mean and standard deviation of s over the images of each class; `counts` (num_classes,);
    `saturated[block]` the shares of gate values above SATURATION_HIGH and below SATURATION_LOW."""

    per_class: dict[str, Tensor]
    counts: Tensor
    classes: list[str]
    per_class_std: dict[str, Tensor] = field(default_factory=dict)
    saturated: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def blocks(self) -> list[str]:
        return list(self.per_class)

    def mean(self, block: str) -> Tensor:
        """Mean excitation over all images, (C,)."""
        weights = self.counts.to(self.per_class[block].dtype)
        return (self.per_class[block] * weights[:, None]).sum(0) / weights.sum().clamp_min(1)

    def class_spread(self, block: str) -> float:
        """Mean over channels of the standard deviation across the class means: near 0 for class-agnostic blocks."""
        present = self.counts > 0
        return float(self.per_class[block][present].std(0, unbiased=False).mean())


@torch.no_grad()
def collect_excitations(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    num_classes: int,
    *,
    classes: list[str] | None = None,
    max_images: int | None = None,
    blocks: Sequence[str] | None = None,
) -> ExcitationStats:
    """Run `model` in eval mode over (images, labels) batches and average each SE block's excitation per class.

    `blocks` keeps only those SE blocks (paper names; default all); `max_images` stops after that many
    images. Excitations with spatial extent (squeeze="none") are averaged over positions first (their
    saturation counts every position).
    """
    chosen = select_blocks(model, blocks, what=type(model).__name__)
    # Every sum stays on the model's device until the last batch (reading one waits for the device).
    sums: dict[str, Tensor] = {}
    squares: dict[str, Tensor] = {}
    saturated: dict[str, Tensor] = {}  # int64 (above, below)
    values_seen = dict.fromkeys(chosen, 0)
    counts: Tensor | None = None
    captured: dict[str, Tensor] = {}

    def hook(name: str):
        def capture(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            captured[name] = excitation_values(output).double()  # (N, C)
            outside = torch.stack([(output > SATURATION_HIGH).sum(), (output < SATURATION_LOW).sum()])
            saturated[name] = saturated[name] + outside if name in saturated else outside
            values_seen[name] += output.numel()

        return capture

    handles = [block.gate.register_forward_hook(hook(name)) for name, block in chosen.items()]
    was_training = model.training
    model.eval()
    seen = 0
    try:
        for images, labels in batches:
            if max_images is not None and seen >= max_images:
                break
            if max_images is not None:
                images, labels = images[: max_images - seen], labels[: max_images - seen]
            captured.clear()
            with se_impl(model, "naive"):  # the formula as written: s on (N, C, 1, 1), x * s
                model(images)
            if captured:
                labels = labels.to(next(iter(captured.values())).device)
            for name, values in captured.items():
                if name not in sums:
                    sums[name] = values.new_zeros(num_classes, values.shape[1])
                    squares[name] = torch.zeros_like(sums[name])
                sums[name].index_add_(0, labels, values)
                squares[name].index_add_(0, labels, values.square())
            batch_counts = torch.bincount(labels, minlength=num_classes)
            counts = batch_counts if counts is None else counts + batch_counts
            seen += len(labels)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    counts = (counts.cpu() if counts is not None else torch.zeros(num_classes, dtype=torch.int64)).double()
    per_class, per_class_std, shares = {}, {}, {}
    for name in chosen:
        if name not in sums:
            continue
        mean = sums[name].cpu() / counts.clamp_min(1)[:, None]
        variance = (squares[name].cpu() / counts.clamp_min(1)[:, None] - mean.square()).clamp_min(0)
        per_class[name], per_class_std[name] = mean.float(), variance.sqrt().float()
        above, below = saturated[name].tolist()
        total = float(values_seen[name])
        shares[name] = (above / max(total, 1.0), below / max(total, 1.0))
    return ExcitationStats(per_class, counts.long(), classes or [str(i) for i in range(num_classes)], per_class_std, shares)


def sample_channels(channels: int, count: int) -> list[int]:
    """`count` channel indices spread evenly over 0 .. channels-1 (all of them where there are fewer)."""
    if count >= channels:
        return list(range(channels))
    if count == 1:
        return [0]
    return sorted({round(i * (channels - 1) / (count - 1)) for i in range(count)})


def images_per_class(labels: Iterable[int], count: int | None) -> list[int]:
    """Positions of the first `count` images of each class, in the split's order (None: every image)."""
    taken: dict[int, int] = {}
    chosen = []
    for position, label in enumerate(labels):
        if count is None or taken.get(label, 0) < count:
            taken[label] = taken.get(label, 0) + 1
            chosen.append(position)
    return chosen


def stats_as_json(stats: ExcitationStats, paths: Mapping[str, str], channels: int = PAPER_CHANNELS) -> list[dict[str, Any]]:
    """One entry per block: name, module path, channels, the sampled channels, class spread, saturation,
    mean (C,) over all images, per_class {class: (C,) mean}, per_class_std {class: (C,)}."""
    present = [i for i, count in enumerate(stats.counts.tolist()) if count > 0]

    def floats(values: Tensor) -> list[float]:
        return [round(float(v), 6) for v in values]

    rows = []
    for name in stats.blocks:
        above, below = stats.saturated.get(name, (math.nan, math.nan))
        width = stats.per_class[name].shape[1]
        rows.append({
            "name": name,
            "module": paths.get(name, name),
            "channels": width,
            "sampled_channels": sample_channels(width, channels),
            "class_spread": round(stats.class_spread(name), 6),
            "saturation": {f"above_{SATURATION_HIGH}": round(above, 6), f"below_{SATURATION_LOW}": round(below, 6)},
            "mean": floats(stats.mean(name)),
            "per_class": {stats.classes[i]: floats(stats.per_class[name][i]) for i in present},
            "per_class_std": {stats.classes[i]: floats(stats.per_class_std[name][i]) for i in present},
        })
    return rows


# ---------------------------------------------------------------------------------------------------
# The paper's figures of the excitation (Figs. 6-7)


def plot_excitations(stats: ExcitationStats, path: str | Path, *, title: str = "", channels: int = PAPER_CHANNELS) -> Path:
    """The paper's Fig. 6: one panel per SE block, the mean excitation of each class (thin lines) and of all
    images (black) over `channels` channels sampled evenly from the block's."""
    figure, axes = block_axes(len(stats.blocks), title, sharey=True)
    colours = [f"C{i % 10}" for i in range(len(stats.classes))]
    for axis, block in zip(axes, stats.blocks):
        sampled = sample_channels(stats.per_class[block].shape[1], channels)
        values = stats.per_class[block][:, sampled]
        # "all" underneath, wide and grey: the class lines stay visible where they agree with it.
        axis.plot(sampled, stats.mean(block)[sampled].numpy(), color="0.2", linewidth=2.4, alpha=0.45, zorder=1,
                  label="all")
        for index, name in enumerate(stats.classes):
            if stats.counts[index] > 0:
                axis.plot(sampled, values[index].numpy(), color=colours[index], linewidth=0.8, alpha=0.9, zorder=2,
                          label=name)
        axis.set_title(f"{block}  (class spread {stats.class_spread(block):.3f})", fontsize=9)
        axis.set_xlabel("channel index", fontsize=8)
        axis.tick_params(labelsize=7)
    return finish_block_figure(figure, axes, path, "mean excitation")


def plot_excitation_spread(
    stats: ExcitationStats, path: str | Path, classes: Sequence[int], *, title: str = "", channels: int = PAPER_CHANNELS
) -> Path:
    """The paper's Fig. 7: one panel per SE block, for each of `classes` (indices) the mean excitation over
    its images with a band of ± one standard deviation, over `channels` sampled channels."""
    figure, axes = block_axes(len(stats.blocks), title, sharey=True)
    for axis, block in zip(axes, stats.blocks):
        sampled = sample_channels(stats.per_class[block].shape[1], channels)
        for colour, index in enumerate(classes):
            if stats.counts[index] == 0:
                continue
            mean = stats.per_class[block][index, sampled].numpy()
            std = stats.per_class_std[block][index, sampled].numpy()
            axis.plot(sampled, mean, color=f"C{colour % 10}", linewidth=1.0, label=stats.classes[index])
            axis.fill_between(sampled, mean - std, mean + std, color=f"C{colour % 10}", alpha=0.2, linewidth=0)
        axis.set_title(block, fontsize=9)
        axis.set_xlabel("channel index", fontsize=8)
        axis.tick_params(labelsize=7)
    return finish_block_figure(figure, axes, path, "excitation (mean ± std)")


# ---------------------------------------------------------------------------------------------------
# `senet analyze excitation`


@dataclass
class ExcitationStudy:
    """What `excitation_study` measured and wrote."""

    stats: ExcitationStats
    json_path: Path
    figures: list[Path]
    model: str
    images: int

    def summary(self) -> str:
        spread = ", ".join(f"{block} {self.stats.class_spread(block):.3f}" for block in self.stats.blocks)
        return f"class spread of the excitation per SE block (std over classes, mean over channels): {spread}"


def check_results_free(output: Path, overwrite: bool) -> None:
    """ConfigError if `output` holds an earlier analysis's results and `overwrite` is not given."""
    earlier = [output / name for name in RESULTS if (output / name).exists()]
    if earlier and not overwrite:
        raise ConfigError(f"{output} already holds results ({', '.join(p.name for p in earlier)}); replace them with "
                          "--overwrite or choose another --output")


def excitation_study(
    checkpoint: str | Path,
    data: str | None = None,
    *,
    output: str | Path,
    blocks: Sequence[str] | str | None = None,
    images_per_class: int | None = PAPER_IMAGES_PER_CLASS,
    channels: int = PAPER_CHANNELS,
    classes: Sequence[str] | None = None,
    batch_size: int = 128,
    workers: int = 0,
    device: str = "auto",
    ema: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    title: str | None = None,
) -> ExcitationStudy:
    """`senet analyze excitation` (Sec. 7.2): the excitation of a checkpoint's SE blocks over `images_per_class`
    validation images of each class (None: all), as output/excitation.json, excitation.png (Fig. 6: the
    per-class means over `channels` sampled channels) and excitation_spread.png (Fig. 7: mean ± std over
    the images of `classes`, default the first four)."""
    output = Path(output)
    with FolderLock(output, fix="wait for it to finish, or write into another --output"):
        check_results_free(output, overwrite)
        torch_device = resolve_device(device, DistEnv())
        model, record, source = loaded = load_for_evaluation(checkpoint, ema=ema)
        chosen = list(select_blocks(model, blocks, what=f"{source} ({record.model})"))  # before reading any data
        pipeline = eval_pipeline(loaded, data, batch_size=batch_size, workers=workers, device=torch_device,
                                 select=lambda images: images_per_class_of(images, images_per_class))
        names = list(record.classes or pipeline.images.classes)
        spread_classes = _class_indices(names, classes)
        loader = progress_bar(pipeline.loader, len(pipeline.loader.sampler), "excitation", disable=not progress)
        stats = collect_excitations(pipeline.model, device_batches(loader, pipeline.normalize), len(names), classes=names,
                                    blocks=chosen)
        output.mkdir(parents=True, exist_ok=True)
        label = title or f"{record.model} on {pipeline.data}"
        result = {
            "checkpoint": str(pipeline.source),
            "model": record.model,
            "data": pipeline.data,
            "input_size": pipeline.input_size,
            "images": int(stats.counts.sum()),
            "images_per_class": images_per_class,
            "classes": names,
            "counts": stats.counts.tolist(),
            "saturation_thresholds": [SATURATION_HIGH, SATURATION_LOW],
            "blocks": stats_as_json(stats, se_block_paths(pipeline.model), channels),
        }
        json_path = output / RESULTS[0]
        text = json.dumps(result, indent=1)
        atomic_write(json_path, lambda temp: temp.write_text(text))
        figures = [
            plot_excitations(stats, output / RESULTS[1], title=f"{label}\nmean excitation per class (paper Fig. 6)", channels=channels),
            plot_excitation_spread(stats, output / RESULTS[2], spread_classes, channels=channels,
                                   title=f"{label}\nexcitation: mean ± std over the images of a class (paper Fig. 7)"),
        ]
        return ExcitationStudy(stats, json_path, figures, record.model, int(stats.counts.sum()))


def images_per_class_of(images: Any, count: int | None) -> list[int]:
    """`images_per_class` over an ImageSet's labels."""
    return images_per_class((images.label(i) for i in range(len(images))), count)


def _class_indices(names: list[str], wanted: Sequence[str] | None, default: int = 4) -> list[int]:
    if not wanted:
        return list(range(min(default, len(names))))
    missing = [name for name in wanted if name not in names]
    if missing:
        raise ConfigError(f"--classes names {missing[0]!r}{did_you_mean(missing[0], names)}, which the data do not have; "
                          f"its classes are: {', '.join(names[:20])}{', ...' if len(names) > 20 else ''}")
    return [names.index(name) for name in wanted]


def progress_bar(iterable: Iterable[Any], images: int, desc: str, *, disable: bool = False) -> Any:
    """`iterable` (a loader of batches) with a tqdm bar on stderr counting images (only on a terminal)."""
    import sys

    from tqdm import tqdm

    bar = tqdm(total=images, desc=desc, unit="img", leave=False, disable=disable or not sys.stderr.isatty(), dynamic_ncols=True)

    def counted() -> Iterator[Any]:
        try:
            for batch in iterable:
                yield batch
                bar.update(len(batch.labels))
        finally:
            bar.close()

    return counted()
