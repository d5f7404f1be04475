"""Feature maps for detection and segmentation backbones, as timm's `features_only` models.

Every model has `feature_info`: one entry per stage output, with its channels (`num_chs`), its stride
relative to the input (`reduction`) and the name of the module that computes it (`module`).
`create_model(name, features_only=True, out_indices=(1, 2, 3, 4))` returns a `FeatureListNet` whose
forward gives those stages' maps as a list, e.g. for se_resnet50 (N, 256, H/4, W/4) .. (N, 2048, H/32, W/32).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import torch
from torch import Tensor, nn

from senet.errors import ConfigError
from senet.layers import SEConfig
from senet.models.base import ImageClassifier, check_image_batch

torch.fx.wrap("check_image_batch")  # a leaf in this module's traces too


def feature(module: str, num_chs: int, reduction: int) -> dict[str, Any]:
    """One `feature_info` entry: the output of `module`, `num_chs` channels at 1/`reduction` of the input."""
    return {"num_chs": num_chs, "reduction": reduction, "module": module}


@dataclass(frozen=True)
class StageInfo:
    """A family's stages and SE blocks as the paper numbers them, declared where the network is built (next
    to `feature_info`) so that complexity, the ablations, `add_se` and `senet info` read them instead of
    building the model again or running it.

    modules: the module of each stage (or, where a stage is no module of its own, of each unit) and its
    stage number, the number `se_stages` counts: ResNet's `layer1` .. `layer4` are conv2_x .. conv5_x,
    2 .. 5 (Table 13). se_stages: the numbers `se_stages` accepts. se_placement: where the SE blocks
    sit, in words. se_defaults: the SE options of the family's SE twin (the paper's unless it says other).
    """

    modules: Mapping[str, int]
    se_stages: tuple[int, ...]
    se_placement: str
    se_defaults: SEConfig = field(default_factory=SEConfig)

    def stage_of(self, path: str) -> int | None:
        """The stage number of the module at `path` (or inside a stage module), None outside every stage."""
        for name, number in self.modules.items():
            if path == name or path.startswith(name + "."):
                return number
        return None

    def top_level(self) -> dict[str, int]:
        """{top-level module: stage number} of the stages that are modules of the network itself."""
        return {name: number for name, number in self.modules.items() if "." not in name}


def min_input_size(model: nn.Module) -> int:
    """The smallest input side `model` is meant for: its own `min_input_size` where it declares one
    (Inception: 75), and never below the stride of its last stage (`feature_info`), at which the last
    feature map (what the global pool sees) is one pixel. Smaller inputs still run, since padding keeps
    1x1 maps alive, but then the network sees almost nothing and training BatchNorm normalises noise."""
    declared = int(getattr(model, "min_input_size", 1))
    info = getattr(model, "feature_info", None)
    if not isinstance(info, FeatureInfo) or not info.info:
        return declared
    return max(declared, max(int(entry["reduction"]) for entry in info.info))


class FeatureInfo(Sequence[dict[str, Any]]):
    """timm's FeatureInfo: the entries of every stage (indexable, `info[i]["num_chs"]`) and the selected
    `out_indices`, whose channels, reductions and module names `channels()`, `reduction()` and
    `module_name()` list (or give for one index `idx`)."""

    def __init__(self, info: Iterable[dict[str, Any]], out_indices: Iterable[int] | None = None) -> None:
        self.info = [dict(entry) for entry in info]
        self.out_indices = tuple(range(len(self.info))) if out_indices is None else tuple(out_indices)

    def from_other(self, out_indices: Iterable[int]) -> FeatureInfo:
        return FeatureInfo(self.info, out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None) -> Any:
        def pick(i: int) -> dict[str, Any]:
            return dict(self.info[i]) if keys is None else {k: self.info[i][k] for k in keys}

        if idx is None:
            return [pick(i) for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [pick(i) for i in idx]
        return pick(idx)

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)

    @overload
    def __getitem__(self, item: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, item: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, item: int | slice) -> Any:
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo({self.info}, out_indices={self.out_indices})"


def check_out_indices(name: str, out_indices: Any, stages: int) -> tuple[int, ...]:
    """`out_indices` as non-negative stage indices, or a one-line ConfigError (negative ones count from the end)."""
    if out_indices is None:
        return tuple(range(stages))
    valid = f"{name} has {stages} feature stages, out_indices 0 .. {stages - 1} (or -{stages} .. -1)"
    if isinstance(out_indices, int) and not isinstance(out_indices, bool):
        out_indices = (out_indices,)
    try:
        indices = tuple(out_indices)
    except TypeError:
        raise ConfigError(f"out_indices must be a tuple of ints, got {out_indices!r}; {valid}") from None
    if not indices or any(isinstance(i, bool) or not isinstance(i, int) or not -stages <= i < stages for i in indices):
        raise ConfigError(f"out_indices {out_indices!r} is not valid: {valid}")
    indices = tuple(i % stages for i in indices)
    if len(set(indices)) != len(indices):
        raise ConfigError(f"out_indices {out_indices!r} names a stage twice; {valid}")
    return indices


class FeatureStage(nn.ModuleDict):
    """Modules run in order, each under its name in the model; the outputs of those named in `feature_taps`
    are appended to a list. A FeatureStage inside stands for an nn.Sequential of the model with a feature
    map inside it, whose children run one by one. (As timm's FeatureListNet, for TorchScript: it unrolls
    the loop over the owned modules.)"""

    # The attribute's type for TorchScript, which cannot infer it from an empty list and reads class
    # annotations unevaluated (in this module they are strings), so given as a type.
    __annotations__ = {"feature_taps": list[str]}

    def __init__(self, modules: dict[str, nn.Module], taps: Sequence[str]) -> None:
        super().__init__(modules)
        self.feature_taps = list(taps)

    def forward(self, x: Tensor, maps: list[Tensor]) -> Tensor:
        return self.run(x, maps)

    def run(self, x: Tensor, maps: list[Tensor]) -> Tensor:
        for name, module in self.items():
            if hasattr(module, "feature_taps"):  # a FeatureStage (an isinstance check does not script)
                x = module(x, maps)
            else:
                x = module(x)
            if name in self.feature_taps:
                maps.append(x)
        return x


class FeatureListNet(FeatureStage):
    """A model cut after its last wanted stage; forward gives the maps of `out_indices` as a list.

    The model's own modules run in order (the head is dropped), with the model's state-dict keys, so
    its weights load into this network (`strict=False` for the head's). Input as the model's. It traces
    with torch.jit.trace (the input check then skipped, as in the models) and torch.fx, and exports.
    `return_layers` names the modules whose maps it returns, in the order of `out_indices`.
    """

    def __init__(self, model: ImageClassifier, out_indices: Iterable[int] | None = None) -> None:
        name = getattr(model, "name", type(model).__name__)
        info = model.feature_info
        indices = check_out_indices(name, out_indices, len(info))
        wanted = [info[i]["module"] for i in indices]
        last = max(indices)
        ran: list[str] = []  # the dotted names of the maps in the order they are taken
        modules, taps, _ = stage_modules(
            model, model.feature_modules(), {info[i]["module"] for i in range(last + 1)}, set(wanted),
            info[last]["module"], ran,
        )
        super().__init__(modules, taps)
        self.feature_info = info.from_other(indices)
        self.input_check = (
            type(model).__name__, model.in_chans, model.spatial_dims, model.min_input_size,
            tuple(model.default_input_size),
        )
        self.in_chans = model.in_chans
        self.default_input_size = model.default_input_size
        self.return_layers = wanted
        self.order = [ran.index(module) for module in wanted]  # out_indices' order, as given
        self.train(model.training)

    def forward(self, x: Tensor) -> list[Tensor]:  # type: ignore[override]
        x = check_image_batch(x, *self.input_check)
        maps: list[Tensor] = []
        self.run(x, maps)
        return [maps[i] for i in self.order]


def stage_modules(
    model: nn.Module, paths: Iterable[str], expand: set[str], taps: set[str], last: str, ran: list[str]
) -> tuple[dict[str, nn.Module], list[str], bool]:
    """The modules to run for `paths` in order, up to `last`, under their own (last) names: a module itself,
    or where a module of `expand` lies inside it (it must then run its children in order, an nn.Sequential)
    a FeatureStage of its children. Also the names of those in `taps`, whether `last` was reached, and in
    `ran` the dotted names of the taps in the order their maps are taken."""
    modules: dict[str, nn.Module] = {}
    names: list[str] = []
    done = False
    for path in paths:
        module = model.get_submodule(path)
        key = path.rsplit(".", 1)[-1]
        inner = [t for t in expand if t.startswith(path + ".")]
        if inner:
            if not isinstance(module, nn.Sequential):
                raise TypeError(f"feature module {inner[0]} lies inside {path}, which is not an nn.Sequential")
            children = [f"{path}.{child}" for child, _ in module.named_children()]
            stage, stage_taps, done = stage_modules(model, children, expand, taps, last, ran)
            module = FeatureStage(stage, stage_taps)
        modules[key] = module
        if path in taps:
            names.append(key)
            ran.append(path)
        if done or path == last:
            return modules, names, True
    return modules, names, done


def check_features_only(features_only: bool, out_indices: Any) -> None:
    """Raise ConfigError for `out_indices` without `features_only` (before a model is built)."""
    if out_indices is not None and not features_only:
        raise ConfigError("out_indices selects feature maps: pass features_only=True with it")


def with_features_only(model: nn.Module, features_only: bool, out_indices: Any = None) -> nn.Module:
    """`model`, or with `features_only` its feature maps at `out_indices` (default all stages) as a `FeatureListNet`."""
    check_features_only(features_only, out_indices)
    if not features_only:
        return model
    if not isinstance(model, ImageClassifier):
        raise ConfigError(f"features_only needs a senet model, got {type(model).__name__}")
    net = FeatureListNet(model, out_indices)
    if hasattr(model, "pretrained_cfg"):
        net.pretrained_cfg = model.pretrained_cfg
    return net
