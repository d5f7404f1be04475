"""SE for a network built without it: `add_se` (paper Sec. 3.3, Figs. 2-3: SE as a drop-in unit; Fig. 5).

Where the blocks go, in this order of preference:

1. Residual units (Fig. 3): senet's own (`SEResidualUnit`, the MobileNetV3, ShuffleNet and
   Inception-ResNet units), and any module whose own forward ends in `act(residual + shortcut)` with both
   terms computed from its input: torchvision/timm BasicBlock and Bottleneck, MobileNetV2/V3 inverted
   residuals, a user's block. These are found by tracing the unit's forward with torch.fx (its children
   kept as calls); SE goes on the residual branch before the sum, or at the other points of Fig. 5.
2. Otherwise multi-branch modules whose forward ends in a channel concatenation (Fig. 2, Inception).
3. Otherwise plain CNNs: after the activation of each convolution block (conv, norm, act) found in an
   `nn.Sequential`, as SE-VGG; a depthwise block and the pointwise block after it count as one layer, with
   SE after the pointwise one (SE-MobileNet).

The new blocks are `senet.layers.SqueezeExcitation` modules named `se` inside each unit (so the state-dict
keys are the model's own plus `<unit>.se.*`: torchvision's ResNet-50 takes timm's `seresnet50` weights),
or `se<i>` / `<name>_se` beside the module they follow in a Sequential. A unit whose forward senet does not
own keeps its class and attributes: it becomes an instance of a subclass, `SE<Class>`, whose forward is the
traced one with the SE call added, so training, DDP, torch.compile, torch.export and `senet.complexity`
see an ordinary module. Such a model is saved as a state dict (safetensors), not pickled whole.
"""

from __future__ import annotations

import functools

import math
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from senet.errors import ConfigError, check_choice, did_you_mean
from senet.layers import SEConfig, SEResidualUnit, SqueezeExcitation, se_impl
from senet.layers.nd import CONV_DIMS, NORM_DIMS
from senet.models.base import init_weights_he
from senet.models.blocks import InceptionModule
from senet.models.features import StageInfo
from senet.models.inception_resnet import InceptionResNetUnit
from senet.models.mobilenet import InvertedResidual
from senet.models.shufflenet import ShuffleUnit

__all__ = ["SEReport", "SESite", "add_se"]

INITS = ("default", "identity")
# Layers whose output scales with their input's for a positive factor (f(2x) = 2 f(x), exactly): an
# identity-initialised SE block's compensation may pass through them to the BN or convolution before.
_POSITIVELY_HOMOGENEOUS = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Dropout, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
                           nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
_SCALABLE = (nn.modules.batchnorm._BatchNorm, nn.modules.conv._ConvNd, nn.Linear)
_HALF_AT_ZERO = (nn.Sigmoid, nn.Hardsigmoid)  # gate(0) = 1/2 exactly

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                nn.Hardswish, nn.Mish, nn.Tanh)
_ADDS = (operator.add, operator.iadd, torch.add)
# Elementwise functions that may follow the sum (act(x + f(x))) or the 3x3 conv's norm.
_POINTWISE = (torch.relu, torch.nn.functional.relu, torch.nn.functional.relu6, torch.nn.functional.silu,
              torch.nn.functional.gelu, torch.nn.functional.hardswish, torch.nn.functional.leaky_relu,
              torch.nn.functional.elu, torch.sigmoid, torch.tanh)
_POINTWISE_METHODS = ("relu", "relu_", "sigmoid", "tanh")

# senet units with a slot `se` (None in the plain network) and their one placement: the width it sees.
_SENET_SLOTS: dict[type[nn.Module], Callable[[nn.Module], int]] = {
    InvertedResidual: lambda m: m.dw.out_channels,  # after the depthwise conv (MobileNetV3)
    ShuffleUnit: lambda m: m.conv2.out_channels,  # on the branch before the merge
    InceptionResNetUnit: lambda m: m.up.out_channels,  # on the branch before the scaled sum
}


@dataclass(frozen=True)
class SESite:
    """One inserted SE block: its module name, the unit it serves and its width C -> C/r -> C."""

    name: str
    unit: str
    position: str
    channels: int
    hidden: int
    params: int


@dataclass
class SEReport:
    """What `add_se` inserted where; `str(report)` is a table. Kept on the model as `model.se_report`."""

    model: str
    sites: list[SESite] = field(default_factory=list)
    params_before: int = 0

    @property
    def blocks(self) -> int:
        return len(self.sites)

    @property
    def params_added(self) -> int:
        return sum(site.params for site in self.sites)

    @property
    def summary(self) -> str:
        """One line: how many blocks, how many parameters."""
        return (f"add_se: {self.blocks} SE block{'s' * (self.blocks != 1)} in {self.model}, "
                f"+{self.params_added:,d} params ({self.params_before:,d} -> {self.params_before + self.params_added:,d}, "
                f"+{100 * self.params_added / max(1, self.params_before):.1f}%)")

    def __str__(self) -> str:
        width = max([len(s.name) for s in self.sites] + [10])
        unit_width = max([len(s.unit) for s in self.sites] + [4])
        lines = [self.summary,
                 f"  {'SE block':{width}s}  {'unit':{unit_width}s}  {'position':8s}  {'C -> C/r':>11s}  {'params':>9s}"]
        for s in self.sites:
            lines.append(f"  {s.name:{width}s}  {s.unit:{unit_width}s}  {s.position:8s}  "
                         f"{f'{s.channels} -> {s.hidden}':>11s}  {s.params:9,d}")
        return "\n".join(lines)


def add_se(
    model: nn.Module,
    *,
    reduction: float | Sequence[int] | None = None,
    squeeze: str | None = None,
    gate: str | None = None,
    act: str | None = None,
    bias: bool | None = None,
    divisor: int | None = None,
    min_channels: int | None = None,
    norm: bool | None = None,
    hidden_channels: int | None = None,
    position: str = "standard",
    stages: Iterable[int] | None = None,
    where: Sequence[str] | None = None,
    input_size: Sequence[int] | None = None,
    init: str = "default",
    verbose: bool = False,
) -> nn.Module:
    """Insert SE blocks into `model` in place and return it (Sec. 3.3); `model.se_report` says what went where.

    SE options default to the model family's (a senet model: its SE twin's, e.g. `se_min_channels=4` on
    the CIFAR ResNets, r = 4 with a hard-sigmoid gate on MobileNetV3), else the paper's (r = 16, average
    squeeze, sigmoid gate, ReLU, FC biases, floor(C / r)). `position` is the Fig. 5 integration point in
    residual units (standard, pre, post, identity, 3x3). `stages` keeps the units of those stages only:
    a senet model's own `se_stages` numbering, else s where the unit's output is at 1/2^s of the input
    resolution (ResNet's conv2_x .. conv5_x = 2 .. 5), or for SE after plain conv blocks at 1/2^(s-1)
    (VGG's conv1 .. conv5 = 1 .. 5); found by one forward pass of a zero input of `input_size`, default the
    model's `default_input_size` or (3, 224, 224). `where` names the modules instead (each once, none inside
    another): a residual unit gets SE inside it, any other module SE on its output. A tuple `reduction`
    gives one ratio per stage that gets SE (in stage order), e.g. (16, 16, 16, 8) on a ResNet-50. If a
    place cannot take its block, ConfigError, and the model is left as it came.

    `init`: "default" (He initialisation, as senet's SE networks: each gate starts near 1/2, so a trained
    network's function changes) or "identity": the network computes exactly what it did (to float
    rounding) and still learns. Each block's last FC starts at zero weight (and bias), so its gate is
    gate(0) = 1/2 everywhere (sigmoid, hard_sigmoid), and the layer that produces the block's input (its BN,
    else its convolution, through ReLUs and pools, which commute with a positive scale) has its weight and
    bias doubled: x * 2 * 1/2 = x, exactly in floating point. The FC's gradient is not zero (it is the
    bottleneck's output times the gate's), so the blocks learn from the first step.
    """
    check_choice("init", init, INITS)
    config = _family_defaults(model)
    if isinstance(reduction, Sequence):
        reduction = tuple(reduction)
    given = dict(reduction=reduction, squeeze=squeeze, gate=gate, act=act, bias=bias, divisor=divisor,
                 min_channels=min_channels, norm=norm)
    config = config.replace(position=position, stages=None, **{k: v for k, v in given.items() if v is not None})
    if where is not None and stages is not None:
        raise ConfigError("give where= (module names) or stages=, not both")
    if hidden_channels is not None and hidden_channels < 1:
        raise ConfigError(f"hidden_channels must be >= 1, got {hidden_channels}")

    if where is not None:
        _check_where(where)
        sites = [_named_site(model, name, position) for name in where]
    else:
        sites = _find_sites(model)
    if not sites:
        raise ConfigError(
            f"add_se found nowhere to put SE in {type(model).__name__}: no residual unit, concatenation or "
            "conv-norm-act block in an nn.Sequential (units that already have an `se` are skipped); "
            "name the modules with where=[...]"
        )
    if stages is not None:
        sites = _in_stages(model, sites, tuple(int(s) for s in stages), input_size)

    report = SEReport(type(model).__name__, params_before=sum(p.numel() for p in model.parameters()))

    site_configs = {site.name: config for site in sites}
    if isinstance(config.reduction, tuple):  # one ratio per stage that gets SE
        numbers = _stage_numbers(model, sites, input_size)
        se_stages = tuple(sorted(set(numbers.values())))
        site_configs = {site.name: config.replace(stages=None).for_stage(numbers[site.name], se_stages) for site in sites}

    def build(config: SEConfig, channels: int, dims: int, near: nn.Module) -> SqueezeExcitation:
        se = SqueezeExcitation(
            channels, config.reduction, squeeze=config.squeeze, gate=config.gate, act=config.act,
            bias=config.bias, hidden_channels=hidden_channels, divisor=config.divisor,
            min_channels=config.min_channels, norm=config.norm, dims=dims,
        )
        init_weights_he(se)  # the paper's initialisation, as senet's own SE twins get
        param = next((p for p in near.parameters() if p.is_floating_point()), None)
        return se if param is None else se.to(device=param.device, dtype=param.dtype)

    restore = _snapshot(model)
    blocks: list[tuple[str, SqueezeExcitation]] = []
    try:
        for site in sites:
            site_config = site_configs[site.name]
            name, se = site.insert(site_config, functools.partial(build, site_config))
            report.sites.append(SESite(name, site.label, site.position, se.channels, se.hidden_channels,
                                       sum(p.numel() for p in se.parameters())))
            blocks.append((name, se))
        scaled = _compensated_layers(model, blocks, input_size) if init == "identity" else []
    except BaseException:
        restore()  # a site that fails after others were filled leaves the model as it came
        raise
    with torch.no_grad():  # (nothing can fail from here on: the layers to scale were all found)
        for (_, se), layer in zip(blocks, scaled):
            se.fc2.weight.zero_()
            if se.fc2.bias is not None:
                se.fc2.bias.zero_()
            layer.weight.mul_(2.0)
            if layer.bias is not None:
                layer.bias.mul_(2.0)
    model.se_report = report
    if verbose:
        print(report)
    return model


def _compensated_layers(
    model: nn.Module, blocks: list[tuple[str, SqueezeExcitation]], input_size: Sequence[int] | None
) -> list[nn.Module]:
    """For init="identity": the layer before each new SE block whose weight and bias double (`add_se`), found
    by one eval forward of a zero input that records which module produced each tensor; ConfigError for a
    block whose input is not a BN's or convolution's output through positively homogeneous layers only, or
    whose gate is not 1/2 at 0."""
    for name, se in blocks:
        if not isinstance(se.gate, _HALF_AT_ZERO):
            raise ConfigError(
                f"init='identity' starts each gate at gate(0) = 1/2, which {type(se.gate).__name__} is not "
                f"({name}); use gate='sigmoid' or 'hard_sigmoid', or init='default'"
            )
    inside_se = {m for _, se in blocks for m in se.modules()}
    # Each call's module and its input and output, each as the tensor object and a copy of its values then:
    # an in-place operation that is no module (`out += shortcut`) keeps the object but changes the values.
    calls: list[tuple[str, nn.Module, tuple[object, torch.Tensor | None], tuple[object, torch.Tensor | None]]] = []
    se_inputs: dict[str, tuple[tuple[object, torch.Tensor | None], int]] = {}

    def seen(value: object) -> tuple[object, torch.Tensor | None]:
        return value, value.detach().clone() if isinstance(value, torch.Tensor) else None

    entered: dict[nn.Module, tuple[object, torch.Tensor | None]] = {}  # each input as it was before the call
    handles = []
    for module_name, module in model.named_modules():
        if module in inside_se or any(True for _ in module.children()):
            continue
        def before(m: nn.Module, inputs: tuple) -> None:  # (an in-place ReLU changes its input)
            entered[m] = seen(inputs[0] if inputs else None)
        def record(m: nn.Module, inputs: tuple, output: object, module_name: str = module_name) -> None:
            calls.append((module_name, m, entered.pop(m), seen(output)))
        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(record))
    for name, se in blocks:
        def enter(m: nn.Module, inputs: tuple, name: str = name) -> None:
            se_inputs.setdefault(name, (seen(inputs[0]), len(calls)))
        handles.append(se.squeeze.register_forward_pre_hook(enter))
    size = tuple(input_size or getattr(model, "default_input_size", (3, 224, 224)))
    param = next(model.parameters(), None)
    flags = [(m, m.training) for m in model.modules()]
    generator = torch.Generator().manual_seed(0)  # (random values: a zero input makes unrelated maps equal)
    x = torch.randn((1,) + size, generator=generator)
    model.eval()
    try:
        with torch.no_grad(), se_impl(model, "naive"):
            model(x.to(device=param.device if param is not None else None,
                       dtype=param.dtype if param is not None and param.is_floating_point() else None))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in flags:
            module.training = training
    layers: list[nn.Module] = []
    for name, se in blocks:
        if name not in se_inputs:
            raise ConfigError(f"init='identity': {name} did not run in a forward pass of {type(model).__name__}")
        (tensor, value), before = se_inputs[name]
        chain: list[str] = []
        while True:
            producer = next((c for c in reversed(calls[:before])
                             if c[3][0] is tensor and value is not None and torch.equal(c[3][1], value)), None)
            if producer is None:
                raise ConfigError(
                    f"init='identity' cannot make {name} start as the identity: its input is "
                    f"{' <- '.join(chain + ['a sum or another function'])}, no layer it can rescale; use init='default'"
                    + (" or position='standard'" if "." in name else "")
                )
            module_name, module, (tensor, value), _ = producer
            chain.append(f"{module_name} ({type(module).__name__})")
            if isinstance(module, _SCALABLE) and getattr(module, "weight", None) is not None:
                break
            if not isinstance(module, _POSITIVELY_HOMOGENEOUS):
                raise ConfigError(
                    f"init='identity' cannot make {name} start as the identity: its input is the output of "
                    f"{chain[-1]}, which does not commute with scaling (it can pass ReLUs and pools to a BN or "
                    f"convolution); use init='default'"
                )
            before = calls.index(producer)
        if module in layers:
            raise ConfigError(f"init='identity': {chain[-1]} feeds two SE blocks; use init='default'")
        layers.append(module)
    return layers


def _snapshot(model: nn.Module) -> Callable[[], None]:
    """A function that puts every module of `model` back as it is now: its class, its submodules (in order)
    and its plain attributes. Inserting SE does no more (it adds SE modules, re-orders a Sequential, sets
    attributes, swaps a unit's class for one with a traced forward); parameters and buffers of the
    modules already there are untouched, and values are never changed in place."""
    saved = [(m, type(m), dict(m.named_children()), _plain_attributes(m)) for m in model.modules()]

    def restore() -> None:
        for module, cls, children, attributes in saved:
            module.__class__ = cls
            for name, _ in list(module.named_children()):
                delattr(module, name)
            for name, child in children.items():
                module.add_module(name, child)
            for name in _plain_attributes(module).keys() - attributes.keys():
                delattr(module, name)
            vars(module).update(attributes)

    return restore


def _plain_attributes(module: nn.Module) -> dict[str, object]:
    """The attributes a module's own code set (`self.stride = ...`), not nn.Module's bookkeeping."""
    return {name: value for name, value in vars(module).items() if not name.startswith("_") and name != "training"}


# ---------------------------------------------------------------------------------------------------
# Finding the places


def _family_defaults(model: nn.Module) -> SEConfig:
    """The SE options of the model's SE twin (as a senet family declares them), else the paper's."""
    info = getattr(model, "stage_info", None)
    return info.se_defaults if isinstance(info, StageInfo) else SEConfig()


def _find_sites(model: nn.Module) -> list[_Site]:
    """Residual units if there are any, else concatenation units, else plain conv blocks (module docstring).

    Units that already have an `se` are left alone; if all have one, ConfigError."""
    units: list[_Site] = []
    concats: list[_Site] = []

    def visit(module: nn.Module, name: str) -> None:
        site = _as_unit(module, name)
        if site is not None:
            (concats if site.concat else units).append(site)
            if not site.concat:
                return  # nothing inside a residual unit is a unit of its own
        for child_name, child in module.named_children():
            visit(child, f"{name}.{child_name}" if name else child_name)

    visit(model, "")
    if not units:  # the outermost concatenations
        units = [site for site in concats if not any(site.name.startswith(other.name + ".") for other in concats)]
    if not units:
        return _conv_block_sites(model)
    free = [site for site in units if site.position != "skip"]
    if not free:
        raise ConfigError(
            f"every unit of {type(model).__name__} ({len(units)}, e.g. {units[0].name or 'the model'}) already has "
            "an SE block; add_se adds SE to a network without it (for other SE options build the SE model with them)"
        )
    return free


def _check_where(where: Sequence[str]) -> None:
    """`where=` is a list of distinct names, none inside another (SE inside a unit and again on a module in
    it would have one rewrite undo the other); each name itself is checked by `_named_site`."""
    if isinstance(where, str):
        raise ConfigError(f"where: a list of module names, e.g. where=[{where!r}], not a string")
    seen: set[str] = set()
    for name in where:
        if name in seen:
            raise ConfigError(f"where: {name!r} is named twice; name each module once")
        seen.add(name)
    for name in where:
        outer = next((other for other in where if other and name.startswith(other + ".")), None)
        if outer is not None:
            raise ConfigError(f"where: {name!r} is inside {outer!r}, also named; name one of the two")


def _named_site(model: nn.Module, name: str, position: str) -> _Site:
    """The site for `where=[name]`: SE inside a unit, else on the module's output."""
    modules = dict(model.named_modules())
    if name not in modules or not name:
        raise ConfigError(
            f"where: no module named {name!r} in {type(model).__name__}"
            f"{did_you_mean(name, [n for n in modules if n])}; `print(model)` shows the names"
        )
    site = _as_unit(modules[name], name)
    if site is not None:
        if site.position == "skip":
            raise ConfigError(f"where: {name!r} already has an SE block ({name}.se)")
        return site
    parent_name, _, child = name.rpartition(".")
    return _After(modules[parent_name], parent_name, child, position)


def _as_unit(module: nn.Module, name: str) -> _Site | None:
    """The unit site for `module`, or None if it is not a residual or concatenation unit."""
    if isinstance(module, SEResidualUnit):
        return _SenetResidual(module, name)
    for cls, width in _SENET_SLOTS.items():
        if type(module) is cls:
            return _SenetSlot(module, name, width(module))
    if type(module) is InceptionModule:
        return _SenetSlot(module, name, module.out_channels, concat=True)
    if type(module).__module__.startswith("torch.") or not any(True for _ in module.children()):
        return None  # containers and layers of torch.nn; a module without children cannot hold a unit
    graph = _trace(module)
    if graph is None:
        return None
    modules = dict(module.named_modules())
    merge = _residual_merge(graph, modules)
    if merge is not None:
        return _FxUnit(module, name, graph, merge)
    cat = _concatenation(graph, modules)
    if cat is not None:
        return _FxUnit(module, name, graph, cat, concat=True)
    if isinstance(getattr(module, "se", None), nn.Identity) and _calls(graph, "se"):
        return _FxUnit(module, name, graph, None)  # a block with an empty SE slot (timm), residual or not
    return None


def _calls(graph: fx.Graph, target: str) -> list[fx.Node]:
    return [n for n in graph.nodes if n.op == "call_module" and n.target == target]


def _conv_block_sites(model: nn.Module) -> list[_Site]:
    """SE after each conv-norm-act block of every nn.Sequential (a depthwise block and the block after it
    are one layer); a Sequential that is exactly one such layer gets it inside as `se`."""
    sites: list[_Site] = []
    for seq_name, seq in model.named_modules():
        if not isinstance(seq, nn.Sequential) or (_is_conv_block(seq) and seq is not model):
            continue
        names = [n for n, _ in seq.named_children()]
        children = [c for _, c in seq.named_children()]
        blocks: list[tuple[int, int]] = []  # (first, last) child of each layer
        i = 0
        while i < len(children):
            end = _block_end(children, i)
            if end is None:
                i += 1
                continue
            conv = _first_conv(children[i])
            following = _block_end(children, end + 1)
            if conv is not None and conv.groups > 1 and conv.groups == conv.in_channels and following is not None:
                end = following  # depthwise + pointwise: SE after the pointwise block only (SE-MobileNet)
            blocks.append((i, end))
            i = end + 1
        whole = blocks == [(0, len(children) - 1)] and seq is not model
        for _, end in blocks:
            sites.append(_After(seq, seq_name, names[end], "standard", se_name="se" if whole else None))
    return sites


def _is_conv_block(module: nn.Module) -> bool:
    """A Sequential of exactly conv, [norm], activation (a ConvBnAct)."""
    if not isinstance(module, nn.Sequential):
        return False
    children = list(module.children())
    return _block_end(children, 0, nested=False) == len(children) - 1


def _block_end(children: list[nn.Module], i: int, nested: bool = True) -> int | None:
    """Index of the activation closing a conv block that starts at children[i], or None."""
    if i >= len(children):
        return None
    if nested and _is_conv_block(children[i]):
        return i
    if type(children[i]) not in CONV_DIMS:
        return None
    j = i + 1
    if j < len(children) and type(children[j]) in NORM_DIMS:
        j += 1
    if j < len(children) and isinstance(children[j], _ACTIVATIONS):
        return j
    return None


def _first_conv(module: nn.Module) -> nn.Module | None:
    return next((m for m in module.modules() if type(m) in CONV_DIMS), None)


def _width(module: nn.Module, last: bool = True) -> tuple[int, int] | None:
    """(channels, spatial dims) at the output (`last`) or input of a conv/norm or a module holding them."""
    parts = [m for m in module.modules() if type(m) in CONV_DIMS or type(m) in NORM_DIMS]
    if not parts:
        return None
    m = parts[-1] if last else parts[0]
    if type(m) in CONV_DIMS:
        return (m.out_channels if last else m.in_channels), CONV_DIMS[type(m)]
    return m.num_features, NORM_DIMS[type(m)]


def _width_of(modules: dict[str, nn.Module], node: fx.Node) -> tuple[int, int] | None:
    """(channels, dims) of a traced value: the last conv or norm it is computed from (a channel
    concatenation: the sum of its parts), searching its inputs depth-first."""
    seen: set[fx.Node] = set()

    def search(node: object) -> tuple[int, int] | None:
        if not isinstance(node, fx.Node) or node in seen or len(seen) > 256:
            return None
        seen.add(node)
        if node.op == "call_module":
            width = _width(modules[node.target])
            if width is not None:
                return width
        elif node.op == "placeholder":
            return _input_width(modules, node, None)
        elif _is_cat(node) and (node.args[1:2] == (1,) or node.kwargs.get("dim") == 1):
            parts = [search(part) for part in node.args[0]]
            return None if None in parts else (sum(p[0] for p in parts), parts[0][1])
        for source in node.all_input_nodes:
            width = search(source)
            if width is not None:
                return width
        return None

    return search(node)


def _input_width(modules: dict[str, nn.Module], x: fx.Node, among: set[fx.Node] | None) -> tuple[int, int] | None:
    """(channels, dims) of a traced input, from the first conv or norm that reads it (of `among`, if given)."""
    for user in x.users:
        if (among is None or user in among) and user.op == "call_module":
            width = _width(modules[user.target], last=False)
            if width is not None:
                return width
    return None


def _in_stages(
    model: nn.Module, sites: list[_Site], stages: tuple[int, ...], input_size: Sequence[int] | None
) -> list[_Site]:
    """The sites whose unit is in one of `stages` (see `add_se`)."""
    if not stages:
        raise ConfigError("stages must name at least one stage, e.g. stages=(3, 4, 5)")
    numbers = _stage_numbers(model, sites, input_size)
    valid = sorted(set(numbers.values()))
    bad = [s for s in stages if s not in valid]
    if bad:
        raise ConfigError(f"stages {bad} do not exist in {type(model).__name__}; its units are in stages {valid}")
    return [site for site in sites if numbers[site.name] in stages]


def _stage_numbers(model: nn.Module, sites: list[_Site], input_size: Sequence[int] | None) -> dict[str, int]:
    """The stage of each site: a senet model's numbering as its family declares it (`stage_info`, what its
    `se_stages` count), else from the output stride: s at 1/2^s of the input side in a network of units,
    s at 1/2^(s-1) for SE after plain conv blocks."""
    info = getattr(model, "stage_info", None)
    numbers: dict[str, int] = {}
    for site in sites:
        stage = info.stage_of(site.name) if isinstance(info, StageInfo) else None
        if stage is not None:
            numbers[site.name] = stage
    missing = [site for site in sites if site.name not in numbers]
    if missing:
        # A residual network starts a stage by downsampling (ResNet's conv2_x at 1/4: 2), a plain CNN ends
        # one with its pooling (VGG's conv1 at full size: 1, as senet's VGG numbers it).
        offset = 1 if all(isinstance(site, _After) for site in sites) else 0
        numbers.update({name: s + offset for name, s in _output_strides(model, missing, input_size).items()})
    return numbers


def _output_strides(model: nn.Module, sites: list[_Site], input_size: Sequence[int] | None) -> dict[str, int]:
    """log2 of (input side / output side) of each site's module, from one eval forward of a zero input."""
    size = tuple(input_size or getattr(model, "default_input_size", (3, 224, 224)))
    param = next(model.parameters(), None)
    sides: dict[str, int] = {}
    handles = []
    for site in sites:
        def record(module: nn.Module, inputs: tuple, output: object, name: str = site.name) -> None:
            if isinstance(output, torch.Tensor) and output.dim() > 2:
                sides.setdefault(name, output.shape[-1])
        handles.append(site.output_module.register_forward_hook(record))
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1,) + size, device=param.device if param is not None else None,
                              dtype=param.dtype if param is not None and param.is_floating_point() else None))
    except Exception as error:  # the user's model and input: say what was tried
        raise ConfigError(
            f"stages: add_se runs {type(model).__name__} once on a zero input of shape {(1,) + size} to find "
            f"each unit's resolution, and that failed ({type(error).__name__}: {error}); pass input_size=(C, H, W)"
        ) from None
    finally:
        for handle in handles:
            handle.remove()
        for module, training in flags:
            module.training = training
    return {name: round(math.log2(size[-1] / side)) for name, side in sides.items()}


# ---------------------------------------------------------------------------------------------------
# Tracing a unit's own forward


class _UnitTracer(fx.Tracer):
    """Traces one module's own forward: every submodule stays a call (its own behaviour, hooks and
    train/eval switches untouched)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


def _trace(module: nn.Module) -> fx.Graph | None:
    """The fx graph of `module.forward`, or None if it does not trace or depends on train/eval itself."""
    flags = [(m, m.training) for m in module.modules()]
    graphs = []
    try:
        for training in (True, False):
            module.train(training)
            graphs.append(_UnitTracer().trace(module))
    except Exception:  # noqa: BLE001 - anything fx cannot trace (data-dependent control flow, ...) is no unit
        return None
    finally:
        for m, training in flags:
            m.training = training
    if graphs[0].python_code("self").src != graphs[1].python_code("self").src:
        return None
    return graphs[0]


def _ancestors(node: fx.Node) -> set[fx.Node]:
    """`node` and every node it is computed from."""
    seen, stack = set(), [node]
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(n.all_input_nodes)
    return seen


def _pointwise(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The input of `node` if it is a one-input, shape-keeping step (activation, dropout, identity), else None."""
    if len(node.all_input_nodes) != 1:
        return None
    if node.op == "call_module":
        module = modules[node.target]
        parameter_free = not any(True for _ in module.parameters())
        if isinstance(module, _ACTIVATIONS) or (parameter_free and not any(True for _ in module.children())
                                                 and type(module) not in CONV_DIMS):
            return node.all_input_nodes[0]
        return None
    if (node.op == "call_function" and node.target in _POINTWISE) or (
        node.op == "call_method" and node.target in _POINTWISE_METHODS
    ):
        return node.all_input_nodes[0]
    return None


@dataclass
class _Merge:
    """The end of a unit's forward: `node` (a sum or a concatenation) and what follows it to the output."""

    node: fx.Node
    residual: fx.Node | None = None
    shortcut: fx.Node | None = None


def _tail_start(graph: fx.Graph, modules: dict[str, nn.Module]) -> fx.Node | None:
    """The node the output is computed from through one-input pointwise steps only."""
    output = next(n for n in graph.nodes if n.op == "output")
    node = output.args[0]
    while isinstance(node, fx.Node):
        if _is_add(node) or _is_cat(node):
            return node
        node = _pointwise(node, modules)
    return None


def _is_add(node: fx.Node) -> bool:
    if node.kwargs.get("alpha", 1) != 1:
        return False
    return (node.op == "call_function" and node.target in _ADDS) or (
        node.op == "call_method" and node.target in ("add", "add_")
    )


def _is_cat(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target in (torch.cat, torch.concat)


def _input(graph: fx.Graph) -> fx.Node | None:
    return next((n for n in graph.nodes if n.op == "placeholder"), None)


def _residual_merge(graph: fx.Graph, modules: dict[str, nn.Module]) -> _Merge | None:
    """The sum `residual + shortcut` that ends the forward (then only activations), both computed from
    the input; the shortcut is the input itself or the shorter of the two paths (a projection). Two
    paths of one length (`f(x) + self.shortcut(x)`, each one call) are told apart by `_tie_shortcut`."""
    x = _input(graph)
    node = _tail_start(graph, modules)
    if x is None or node is None or not _is_add(node):
        return None
    a, b = node.args[0], node.args[1]
    if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)) or a is b:
        return None
    from_a, from_b = _ancestors(a), _ancestors(b)
    if x not in from_a or x not in from_b:
        return None
    if b is x or (a is not x and len(from_b) < len(from_a)):
        return _Merge(node, residual=a, shortcut=b)
    if a is x or len(from_a) < len(from_b):
        return _Merge(node, residual=b, shortcut=a)
    shortcut = _tie_shortcut(x, a, b, modules)
    if shortcut is None:
        return None
    return _Merge(node, residual=b if shortcut is a else a, shortcut=shortcut)


_CLONES = ("clone", "contiguous")


def _tie_shortcut(x: fx.Node, a: fx.Node, b: fx.Node, modules: dict[str, nn.Module]) -> fx.Node | None:
    """Of two operands with equally many ancestors, the shortcut: the one that is x through identity
    steps only (an empty `nn.Sequential`, `nn.Identity`, `x.clone()`), else the one with fewer parameters,
    then fewer module calls, on its own path. The other, the residual branch, must hold a convolution."""

    def is_input(node: fx.Node) -> bool:
        while node is not x:
            if node.op == "call_module":
                module = modules[node.target]
                if not (isinstance(module, nn.Identity) or (isinstance(module, nn.Sequential) and len(module) == 0)):
                    return False
            elif not ((node.op == "call_method" and node.target in _CLONES)
                      or (node.op == "call_function" and node.target is torch.clone)):
                return False
            if len(node.all_input_nodes) != 1:
                return False
            node = node.all_input_nodes[0]
        return True

    def cost(node: fx.Node, other: fx.Node) -> tuple[int, int]:
        called = {n.target for n in _ancestors(node) - _ancestors(other) if n.op == "call_module"}
        return sum(p.numel() for t in called for p in modules[t].parameters()), len(called)

    def holds_conv(node: fx.Node, other: fx.Node) -> bool:
        return any(n.op == "call_module" and _first_conv(modules[n.target]) is not None
                   for n in _ancestors(node) - _ancestors(other))

    if is_input(a) != is_input(b):
        shortcut, residual = (a, b) if is_input(a) else (b, a)
    elif cost(a, b) != cost(b, a):
        shortcut, residual = (a, b) if cost(a, b) < cost(b, a) else (b, a)
    else:
        return None
    return shortcut if holds_conv(residual, shortcut) else None


def _concatenation(graph: fx.Graph, modules: dict[str, nn.Module]) -> _Merge | None:
    """A channel concatenation of at least two branches of the input that ends the forward."""
    x = _input(graph)
    node = _tail_start(graph, modules)
    if x is None or node is None or not _is_cat(node):
        return None
    parts = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if dim != 1 or not isinstance(parts, (list, tuple)) or len(parts) < 2:
        return None
    if not all(isinstance(p, fx.Node) and x in _ancestors(p) for p in parts):
        return None
    return _Merge(node)


# ---------------------------------------------------------------------------------------------------
# The sites and how SE goes into each


Build = Callable[[int, int, nn.Module], SqueezeExcitation]


class _Site:
    """A place for one SE block; `insert` puts it there and returns its name and the block."""

    concat = False

    def __init__(self, unit: nn.Module, name: str) -> None:
        self.unit, self.name = unit, name
        self.label = f"{name} ({type(unit).__name__})" if name else type(unit).__name__
        self.position = ""  # "skip": the unit already has SE; set to the position used by `insert`

    @property
    def output_module(self) -> nn.Module:
        """The module whose output resolution gives the site's stage."""
        return self.unit

    def insert(self, config: SEConfig, build: Build) -> tuple[str, SqueezeExcitation]:
        raise NotImplementedError


_SE_CLASS_NAMES = re.compile(r"squeeze_?excit\w*|se(module|layer|block)?", re.IGNORECASE)


def _holds_se(unit: nn.Module) -> bool:
    """Whether a module inside `unit` is an SE block: senet's, or one whose class is named like one
    (SqueezeExcitation, SqueezeExcite, SEModule, SELayer, ...: torchvision's and timm's)."""
    return any(isinstance(m, SqueezeExcitation) or _SE_CLASS_NAMES.fullmatch(type(m).__name__)
               for m in unit.modules())


def _check_free(unit: nn.Module, name: str) -> None:
    if getattr(unit, "se", None) is not None:
        raise ConfigError(f"{name or 'the model'} ({type(unit).__name__}) already has an attribute `se`")


class _SenetResidual(_Site):
    """A senet residual unit: its own SE slot at any point of Fig. 5 (`SEResidualUnit.init_se`)."""

    def __init__(self, unit: SEResidualUnit, name: str) -> None:
        super().__init__(unit, name)
        self.position = "skip" if unit.se is not None else ""

    def insert(self, config: SEConfig, build: Build) -> tuple[str, SqueezeExcitation]:
        self.position = config.position
        unit = self.unit
        # Bottlenecks put SE-3x3 after conv2 and end in conv3; basic blocks after conv1, ending in conv2.
        mid, last = (unit.conv2, unit.conv3) if hasattr(unit, "conv3") else (unit.conv1, unit.conv2)
        dims = CONV_DIMS[type(unit.conv1)]
        unit.init_se(config, in_channels=unit.conv1.in_channels, mid_channels=mid.out_channels,
                     out_channels=last.out_channels, dims=dims)
        unit.se = build(unit.se.channels, dims, unit)
        return _join(self.name, "se"), unit.se


class _SenetSlot(_Site):
    """A senet unit with one SE placement (MobileNetV3, ShuffleNet, Inception-ResNet units, inception
    modules): its `se` slot, filled."""

    def __init__(self, unit: nn.Module, name: str, channels: int, concat: bool = False) -> None:
        super().__init__(unit, name)
        self.channels, self.concat = channels, concat
        self.position = "skip" if unit.se is not None else ""

    def insert(self, config: SEConfig, build: Build) -> tuple[str, SqueezeExcitation]:
        if config.position != "standard":
            raise ConfigError(
                f"{self.label} has one SE placement (its family's), so position={config.position!r} does not "
                "apply; the Fig. 5 variants need a residual unit of the ResNet kind"
            )
        self.position = "standard"
        self.unit.se = build(self.channels, _width(self.unit)[1], self.unit)
        return _join(self.name, "se"), self.unit.se


class _FxUnit(_Site):
    """A unit found by tracing: SE spliced into its traced forward (see `_install_forward`)."""

    def __init__(self, unit: nn.Module, name: str, graph: fx.Graph, merge: _Merge | None, concat: bool = False) -> None:
        super().__init__(unit, name)
        self.graph, self.merge, self.concat = graph, merge, concat
        self.modules = dict(unit.named_modules())
        # A placeholder `se = nn.Identity()` that the forward calls (timm's blocks) is a slot to fill.
        self.slot = next(iter(_calls(graph, "se")), None)
        if not isinstance(getattr(unit, "se", None), nn.Identity):
            self.slot = None
        has_se = self.slot is None and isinstance(getattr(unit, "se", None), nn.Module)
        self.position = "skip" if has_se or _holds_se(unit) else ""

    def insert(self, config: SEConfig, build: Build) -> tuple[str, SqueezeExcitation]:
        position, graph, merge = config.position, self.graph, self.merge
        self.position = position
        if self.concat and position != "standard":
            raise ConfigError(
                f"{self.label} merges its branches by concatenation: SE goes on the concatenated output "
                f"(position='standard'), not {position!r}"
            )
        if self.slot is not None:  # the unit's own forward calls `se` at its family's placement
            if position != "standard":
                raise ConfigError(f"{self.label} has its own SE slot (`se`), so position={position!r} does not apply")
            width = _width_of(self.modules, self.slot.all_input_nodes[0])
            if width is None:
                raise ConfigError(f"add_se cannot tell the channels at the `se` slot of {self.label}")
            self.unit.se = build(*width, self.unit)
            return _join(self.name, "se"), self.unit.se
        _check_free(self.unit, self.name)
        x = _input(graph)
        output = next(n for n in graph.nodes if n.op == "output")
        if position == "standard" and self.concat:
            target, channels = merge.node, None
        elif position in ("standard", "identity"):
            target = merge.residual if position == "standard" else merge.shortcut
            channels = _width_of(self.modules, merge.residual)
        elif position == "post":
            target, channels = output.args[0], _width_of(self.modules, merge.residual)
        elif position == "pre":
            target, channels = x, _input_width(self.modules, x, _ancestors(merge.residual))
        else:  # 3x3
            target, channels = self._after_3x3()
        if channels is None and not self.concat:
            raise ConfigError(f"add_se cannot tell the channels at position={position!r} of {self.label}: "
                              "no convolution or BatchNorm feeds it; name another module with where=[...]")
        if self.concat:
            channels = self._concat_width(merge.node)
        width, dims = channels
        self.unit.se = build(width, dims, self.unit)

        if position == "pre":  # the residual branch reads SE(x); the shortcut keeps x (Fig. 5c)
            users = [u for u in x.users if u in _ancestors(merge.residual)]
            with graph.inserting_after(x):
                se = graph.call_module("se", (x,))
            for user in users:
                user.replace_input_with(x, se)
        elif position in ("standard", "identity") and not self.concat:
            with graph.inserting_before(merge.node):
                se = graph.call_module("se", (target,))
            merge.node.replace_input_with(target, se)
        else:  # SE on a value: every later use of it reads SE(value)
            with graph.inserting_after(target):
                se = graph.call_module("se", (target,))
            target.replace_all_uses_with(se, delete_user_cb=lambda user: user is not se)
        graph.lint()
        _install_forward(self.unit, graph)
        return _join(self.name, "se"), self.unit.se

    def _concat_width(self, node: fx.Node) -> tuple[int, int]:
        width = _width_of(self.modules, node)
        if width is None:
            raise ConfigError(f"add_se cannot tell the width of each branch concatenated in {self.label}")
        return width

    def _after_3x3(self) -> tuple[fx.Node, tuple[int, int]]:
        """The end of the first spatial (k > 1) conv's conv-norm-act on the residual branch (SE-3x3, Fig. 5e)."""
        merge = self.merge
        branch = _ancestors(merge.residual) - _ancestors(merge.shortcut)
        for node in self.graph.nodes:
            module = self.modules.get(node.target) if node.op == "call_module" else None
            if node in branch and type(module) in CONV_DIMS and max(module.kernel_size) > 1:
                end = node
                while len(end.users) == 1:
                    user = next(iter(end.users))
                    is_norm = user.op == "call_module" and type(self.modules[user.target]) in NORM_DIMS
                    if user not in branch or not (is_norm or _pointwise(user, self.modules) is end):
                        break
                    end = user
                return end, (module.out_channels, CONV_DIMS[type(module)])
        raise ConfigError(
            f"position='3x3' needs a spatial (k > 1) convolution on the residual branch of {self.label}, "
            "and it has none"
        )


class _After(_Site):
    """SE on the output of a module: beside it in its nn.Sequential, or spliced into its parent's traced
    forward."""

    def __init__(self, parent: nn.Module, parent_name: str, child: str, position: str,
                 se_name: str | None = None) -> None:
        super().__init__(getattr(parent, child), _join(parent_name, child))
        self.parent, self.parent_name, self.child = parent, parent_name, child
        self.label = f"after {self.name} ({type(self.unit).__name__})"
        self.position = position
        self.se_name = se_name or _beside_name(child)

    def insert(self, config: SEConfig, build: Build) -> tuple[str, SqueezeExcitation]:
        if config.position not in ("standard", "post"):
            raise ConfigError(
                f"position={config.position!r} is a point inside a residual unit (Fig. 5); {self.name!r} is not one, "
                "so SE goes on its output (position='standard')"
            )
        parent, child = self.parent, self.child
        if hasattr(parent, self.se_name):
            raise ConfigError(f"cannot name the SE after {self.name!r} {self.se_name!r}: {self.parent_name or 'the model'} "
                              "already has that attribute")
        if isinstance(parent, nn.Sequential):
            children = list(parent.named_children())
            index = [n for n, _ in children].index(child)
            width = next((w for _, m in reversed(children[: index + 1]) if (w := _width(m)) is not None), None)
            if width is None:
                raise ConfigError(f"add_se cannot tell the channels after {self.name!r}: no convolution or norm before it")
            se = build(*width, parent)
            for n, _ in children:  # re-add in order with the SE after `child`: the other names are kept
                delattr(parent, n)
            for n, m in children:
                parent.add_module(n, m)
                if n == child:
                    parent.add_module(self.se_name, se)
            return _join(self.parent_name, self.se_name), se
        graph = _trace(parent)
        if graph is None:
            raise ConfigError(
                f"cannot put SE after {self.name!r}: its parent {type(parent).__name__} is no nn.Sequential and its "
                "forward does not trace with torch.fx; name a module inside an nn.Sequential, or a residual unit"
            )
        calls = _calls(graph, child)
        if not calls:
            raise ConfigError(f"cannot put SE after {self.name!r}: {type(parent).__name__}.forward does not call it")
        width = _width_of(dict(parent.named_modules()), calls[0])
        if width is None:
            raise ConfigError(f"add_se cannot tell the channels after {self.name!r}: no convolution or norm before it")
        se = build(*width, parent)
        parent.add_module(self.se_name, se)
        for call in calls:
            with graph.inserting_after(call):
                node = graph.call_module(self.se_name, (call,))
            call.replace_all_uses_with(node, delete_user_cb=lambda user, node=node: user is not node)
        graph.lint()
        _install_forward(parent, graph)
        return _join(self.parent_name, self.se_name), se


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _beside_name(child: str) -> str:
    """The SE after `conv1_1` is `se1_1` (SE-VGG's naming), after `3` it is `se3`, after `layer1` `layer1_se`."""
    found = re.fullmatch(r"conv(\w+)", child)
    if found:
        return f"se{found[1]}"
    return f"se{child}" if child.isdigit() else f"{child}_se"


# Subclasses made by `_install_forward`, one per (class, forward source).
_SE_CLASSES: dict[tuple[type, str], type] = {}


def _install_forward(module: nn.Module, graph: fx.Graph) -> None:
    """Give `module` the forward `graph` describes, as an instance of a subclass `SE<Class>` of its own class:
    its attributes, methods, submodules and state-dict keys stay as they are."""
    code = graph.python_code("self")
    base = type(module)
    key = (base, code.src)
    cls = _SE_CLASSES.get(key)
    if cls is None:
        namespace = dict(code.globals)
        exec(compile(code.src, f"<add_se: {base.__qualname__}.forward>", "exec"), namespace)  # noqa: S102
        name = base.__name__ if base.__name__.startswith("SE") else f"SE{base.__name__}"
        cls = type(name, (base,), {"forward": namespace["forward"], "__module__": base.__module__,
                                   "__doc__": f"{base.__name__} with SE added by senet.add_se."})
        _SE_CLASSES[key] = cls
    module.__class__ = cls
