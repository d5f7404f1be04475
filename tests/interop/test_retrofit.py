"""senet.add_se: SE twins of senet's plain models, torchvision/timm-style units, inverted residuals, units
found by fx, plain CNNs, where=, the Fig. 5 positions, errors, training, compile, export, complexity."""

from __future__ import annotations

import copy
import importlib.util
import io
import pathlib
from contextlib import redirect_stdout

import pytest
import torch
from torch import nn

import senet
from senet.cli import main as cli_main
from senet.models.mobilenet import MOBILENET_V3_LARGE


def _twin_check(plain: nn.Module, twin: nn.Module, size: int) -> None:
    assert set(plain.state_dict()) == set(twin.state_dict())
    plain.load_state_dict(twin.state_dict())
    plain.eval(), twin.eval()
    x = torch.randn(2, *twin.default_input_size[:1], *(size,) * (len(twin.default_input_size) - 1))
    with torch.no_grad():
        torch.testing.assert_close(plain(x), twin(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "name, size",
    [("resnet50", 32), ("resnet20", 16), ("resnet164", 16), ("resnet18_1d", 64), ("resnet18_3d", 16),
     ("mobilenet_v1", 32), ("shufflenet_v1_g3", 32)],
)
def test_plain_model_with_se_is_its_se_twin(name: str, size: int) -> None:
    plain = senet.add_se(senet.create_model(name))
    twin = senet.create_model(senet.se_twin(name))
    assert plain.se_report.blocks == sum(isinstance(m, senet.SqueezeExcitation) for m in twin.modules())
    _twin_check(plain, twin, size)


@pytest.mark.slow
@pytest.mark.parametrize("name, size", [("vgg16_bn", 32), ("resnext50_32x4d", 32), ("bn_inception", 32),
                                        ("inception_v3", 75), ("inception_resnet_v2", 75)])
def test_large_plain_models_with_se_are_their_twins(name: str, size: int) -> None:
    _twin_check(senet.add_se(senet.create_model(name)), senet.create_model(senet.se_twin(name)), size)


@pytest.mark.parametrize("position", ["pre", "post", "identity", "3x3"])
def test_positions_of_senet_units_match_the_zoo(position: str) -> None:
    plain = senet.add_se(senet.create_model("resnet20"), position=position)
    _twin_check(plain, senet.create_model("se_resnet20", se_position=position), 16)


def test_stages_and_where_match_the_zoo() -> None:
    _twin_check(senet.add_se(senet.create_model("resnet20"), stages=(3, 4)),
                senet.create_model("se_resnet20", se_stages=(3, 4)), 16)
    marked = [f"blocks.{i}" for i, block in enumerate(MOBILENET_V3_LARGE) if block[3]]
    plain = senet.add_se(senet.create_model("mobilenet_v3_large_plain"), where=marked)
    _twin_check(plain, senet.create_model("mobilenet_v3_large"), 32)  # r = 4, hard sigmoid, divisor 8 by default


# A minimal copy of the structure of torchvision's resnet.py (not imported: senet never depends on it).
class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TorchvisionStyleResNet(nn.Module):
    def __init__(self, width: int = 8, num_classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        down = lambda i, o, s: nn.Sequential(nn.Conv2d(i, o, 1, s, bias=False), nn.BatchNorm2d(o))  # noqa: E731
        self.layer1 = nn.Sequential(Bottleneck(width, width, 1, down(width, 4 * width, 1)), Bottleneck(4 * width, width))
        self.layer2 = nn.Sequential(Bottleneck(4 * width, 2 * width, 2, down(4 * width, 8 * width, 2)))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _randomise(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1), m.running_var.uniform_(0.5, 1.5), m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


def test_torchvision_style_resnet_gets_timm_seresnet_keys() -> None:
    model = TorchvisionStyleResNet()
    before = set(model.state_dict())
    senet.add_se(model, divisor=8)
    se_keys = {f"{unit}.se.{fc}.{p}" for unit in ("layer1.0", "layer1.1", "layer2.0") for fc in ("fc1", "fc2")
               for p in ("weight", "bias")}
    assert set(model.state_dict()) == before | se_keys
    assert model.layer1[0].se.hidden_channels == 8  # 32 / 16 = 2, rounded up to timm's multiple of 8
    assert isinstance(model.layer1[0], Bottleneck) and type(model.layer1[0]).__name__ == "SEBottleneck"
    assert model.layer1[0].stride == 1  # the unit keeps its attributes


def _unit_reference(unit: Bottleneck, x: torch.Tensor, position: str) -> torch.Tensor:
    """What the unit computes with SE at `position` (Fig. 5), written out by hand."""
    se, relu = unit.se, torch.relu
    shortcut = x if unit.downsample is None else unit.downsample(x)
    branch_in = se(x) if position == "pre" else x
    out = relu(unit.bn1(unit.conv1(branch_in)))
    out = relu(unit.bn2(unit.conv2(out)))
    if position == "3x3":
        out = se(out)
    out = unit.bn3(unit.conv3(out))
    if position == "standard":
        out = se(out)
    if position == "identity":
        shortcut = se(shortcut)
    out = relu(out + shortcut)
    return se(out) if position == "post" else out


@pytest.mark.parametrize("position", ["standard", "pre", "post", "identity", "3x3"])
def test_each_position_in_a_torchvision_style_bottleneck(position: str) -> None:
    model = _randomise(senet.add_se(TorchvisionStyleResNet(), position=position, reduction=4))
    unit = model.layer1[0]
    expected_width = {"pre": 8, "3x3": 8}.get(position, 32)
    assert unit.se.channels == expected_width
    x = torch.randn(2, 8, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(unit(x), _unit_reference(unit, x, position))


class InvertedResidual(nn.Module):
    """MobileNetV2's block, as torchvision writes it."""

    def __init__(self, inp: int, oup: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True), nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


def _mobilenet_v2_like() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(inplace=True),
                         InvertedResidual(8, 8, 1, 4), InvertedResidual(8, 16, 2, 4), InvertedResidual(16, 16, 1, 4))


def test_inverted_residuals_get_se_before_the_sum() -> None:
    model = _randomise(senet.add_se(_mobilenet_v2_like(), reduction=4))
    assert [site.name for site in model.se_report.sites] == ["3.se", "5.se"]  # the stride-2 block has no sum
    x = torch.randn(2, 16, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(model[5](x), x + model[5].se(model[5].conv(x)))
    with pytest.raises(senet.ConfigError, match="position='3x3' needs a spatial"):
        senet.add_se(_mobilenet_v2_like(), position="3x3")  # its 3x3 is inside one Sequential call


class ScaledUnit(nn.Module):
    """A user's unit with its own names: act(gamma * body(x) + proj(x)), found by tracing."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(2, cout), nn.SiLU(),
                                  nn.Conv2d(cout, cout, 3, padding=1))
        self.proj = nn.Conv2d(cin, cout, 1)
        self.gamma = nn.Parameter(torch.full((1, cout, 1, 1), 0.5))
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.gamma * self.body(x) + self.proj(x))


class TrainingDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.conv(x) if self.training else 0.5 * self.conv(x))


def test_generic_unit_found_by_fx() -> None:
    model = nn.Sequential(ScaledUnit(3, 8), ScaledUnit(8, 8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    senet.add_se(model, reduction=2)
    assert [(s.name, s.channels, s.hidden) for s in model.se_report.sites] == [("0.se", 8, 4), ("1.se", 8, 4)]
    unit, x = model[1], torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(unit(x), unit.act(unit.se(unit.gamma * unit.body(x)) + unit.proj(x)))
    # A forward that reads self.training is not rewritten (its trace would freeze one mode).
    with pytest.raises(senet.ConfigError, match="found nowhere"):
        senet.add_se(nn.Sequential(TrainingDependent(), nn.Flatten()))


class CifarBlock(nn.Module):
    """pytorch-cifar100's BasicBlock: relu(residual_function(x) + shortcut(x)), both one call, the shortcut
    an empty Sequential, a projection, or `x.clone()`: the two operands have equally many ancestors."""

    def __init__(self, cin: int, cout: int, stride: int = 1, clone: bool = False) -> None:
        super().__init__()
        self.residual_function = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.clone = clone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x.clone() if self.clone else self.shortcut(x)
        return nn.functional.relu(self.residual_function(x) + shortcut)


@pytest.mark.parametrize("position", ["standard", "identity"])
def test_units_whose_two_terms_are_one_call_each(position: str) -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), CifarBlock(8, 8),
                          CifarBlock(8, 16, 2), CifarBlock(16, 16, clone=True))
    senet.add_se(model, reduction=4, position=position)
    assert [(s.name, s.channels) for s in model.se_report.sites] == [("3.se", 8), ("4.se", 16), ("5.se", 16)]
    _randomise(model)
    for unit, x in ((model[4], torch.randn(2, 8, 8, 8)), (model[5], torch.randn(2, 16, 4, 4))):
        branch, shortcut = unit.residual_function(x), unit.shortcut(x)
        if position == "standard":
            branch = unit.se(branch)
        else:
            shortcut = unit.se(shortcut)
        with torch.no_grad():
            torch.testing.assert_close(unit(x), torch.relu(branch + shortcut))


def test_a_failed_add_se_leaves_the_model_as_it_was() -> None:
    model = nn.Sequential(nn.Conv2d(3, 32, 3), Bottleneck(32, 8), InvertedResidual(32, 32, 1, 2))
    def attributes() -> list[dict]:
        return [{k: v for k, v in vars(m).items() if not k.startswith("_")} for m in model.modules()]

    keys, types, before = list(model.state_dict()), [type(m) for m in model.modules()], attributes()
    with pytest.raises(senet.ConfigError, match="position='3x3' needs a spatial"):
        senet.add_se(model, position="3x3", reduction=4)  # the Bottleneck takes it, the next unit cannot
    assert list(model.state_dict()) == keys and [type(m) for m in model.modules()] == types
    assert attributes() == before  # (the Bottleneck's se_position, set by the insert, is back as it was)
    assert not hasattr(model[1], "se") and not hasattr(model, "se_report")
    x = torch.randn(1, 3, 8, 8)
    assert model(x).shape == (1, 32, 6, 6)


def test_plain_cnn_stages_count_from_1_as_vgg() -> None:
    model = senet.add_se(_plain_cnn(), stages=(2,), input_size=(3, 16, 16), reduction=4)
    assert [s.name for s in model.se_report.sites] == ["se5"]  # the second conv block: 1/2 of the input side
    with pytest.raises(senet.ConfigError, match=r"its units are in stages \[1, 2\]"):
        senet.add_se(_plain_cnn(), stages=(0,), input_size=(3, 16, 16))


def _plain_cnn() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, 10))


def test_plain_cnn_gets_se_after_each_conv_block() -> None:
    model = _plain_cnn()
    keys = set(model.state_dict())
    senet.add_se(model, reduction=4)
    assert [n for n, _ in model.named_children()] == ["0", "1", "2", "se2", "3", "4", "5", "se5", "6", "7", "8"]
    assert keys < set(model.state_dict())  # the old names (and so the old weights) stay
    assert (model.se2.channels, model.se5.channels) == (16, 32)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.body(x)).mean((2, 3)))


def test_where_names_the_modules() -> None:
    model = senet.add_se(_plain_cnn(), where=["3"], reduction=4)
    assert [s.name for s in model.se_report.sites] == ["se3"] and model.se3.channels == 16
    net = senet.add_se(Net(), where=["act"], reduction=2)  # a parent that is no Sequential: its forward is rewritten
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.head(net.act_se(net.act(net.body(x))).mean((2, 3))))


@pytest.mark.parametrize(
    "build, kwargs, message",
    [
        (lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU()), {}, "found nowhere to put SE in Sequential"),
        (_plain_cnn, {"where": ["feature.3"]}, "where: no module named 'feature.3'"),
        (lambda: senet.create_model("resnet20"), {"where": ["layer1.0", "layer1.0"]},
         "where: 'layer1.0' is named twice"),
        (lambda: senet.create_model("resnet20"), {"where": ["layer1", "layer1.0"]},
         "where: 'layer1.0' is inside 'layer1', also named"),
        (_plain_cnn, {"where": "3"}, r"where: a list of module names, e.g. where=\['3'\]"),
        (_plain_cnn, {"where": ["3"], "position": "pre"}, "position='pre' is a point inside a residual unit"),
        (_plain_cnn, {"stages": (9,)}, r"stages \[9\] do not exist"),
        (lambda: senet.create_model("se_resnet20"), {}, "already has an SE block"),
        (lambda: senet.create_model("shufflenet_v1_g3"), {"position": "post"}, "has one SE placement"),
        (lambda: senet.create_model("resnet20"), {"squeeze": "median"}, "unknown squeeze 'median'"),
    ],
)
def test_bad_input_is_one_clear_error(build, kwargs, message) -> None:
    with pytest.raises(senet.ConfigError, match=message) as error:
        senet.add_se(build(), **kwargs)
    assert "\n" not in str(error.value)


def test_report_and_complexity_agree() -> None:
    model = TorchvisionStyleResNet()
    plain_params = sum(p.numel() for p in model.parameters())
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        senet.add_se(model, reduction=4, verbose=True)
    report = model.se_report
    stats = senet.complexity(model, (3, 32, 32))
    assert stats.se_blocks == report.blocks == 3
    assert stats.se_params == report.params_added == stats.params - plain_params
    # SE's MACs are all the twin adds to the plain count: per block the squeeze and the scale (C*H*W each)
    # and the two FCs (C*C/4 each): 2 * (2*32*8*8 + 2*32*8) + (2*64*4*4 + 2*64*16) = 13312 at 32 px.
    assert stats.macs - stats.se_macs == senet.complexity(TorchvisionStyleResNet(), (3, 32, 32)).macs
    assert stats.se_macs == 13312
    assert buffer.getvalue().startswith(f"add_se: 3 SE blocks in TorchvisionStyleResNet, +{report.params_added:,d} params")
    assert "layer2.0.se  layer2.0 (Bottleneck)" in str(report)


def test_training_state_dict_copy_compile_and_export() -> None:
    model = senet.add_se(TorchvisionStyleResNet(), reduction=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    se_before = model.layer1[0].se.fc1.weight.detach().clone()
    nn.functional.cross_entropy(model(x), y).backward()
    assert all(p.grad is not None for p in model.parameters())
    optimizer.step()
    assert not torch.equal(se_before, model.layer1[0].se.fc1.weight)
    model.eval()
    fresh = senet.add_se(TorchvisionStyleResNet(), reduction=4).eval()
    fresh.load_state_dict(model.state_dict(), strict=True)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(fresh(x), expected)
        torch.testing.assert_close(clone(x), expected)
        exported = torch.export.export(model, (x,))
        torch.testing.assert_close(exported.module()(x), expected)


def test_distributed_data_parallel(tmp_path: pathlib.Path) -> None:
    """A model with SE added trains under DDP (a one-process gloo group) with the gradients it has alone."""
    import torch.distributed as dist

    torch.manual_seed(0)
    model = senet.add_se(TorchvisionStyleResNet(), reduction=4)
    alone = copy.deepcopy(model)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(model)
        nn.functional.cross_entropy(ddp(x), y).backward()
    finally:
        dist.destroy_process_group()
    nn.functional.cross_entropy(alone(x), y).backward()
    for (name, p), q in zip(model.named_parameters(), alone.parameters(), strict=True):
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_torch_compile() -> None:
    model = senet.add_se(TorchvisionStyleResNet(), reduction=4).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(x), model(x), rtol=1e-5, atol=1e-5)


def test_cli_info_add_se(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["info", "resnet20", "--add-se"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("add_se: 9 SE blocks in CifarResNet, +")
    assert "SE      9 blocks" in out


@pytest.mark.peer
def test_peer_torchvision_resnet50_takes_timm_seresnet50_weights() -> None:
    pytest.importorskip("timm")
    pytest.importorskip("torchvision")
    path = pathlib.Path(__file__).parents[2] / "scripts" / "peer_add_se.py"
    spec = importlib.util.spec_from_file_location("peer_add_se", path)
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    figures = peer.compare("resnet50", size=64, batch=2)
    assert figures["strict_load"] == "<All keys matched successfully>"
    assert figures["se_blocks"] == 16 and figures["max_abs_diff"] < 1e-4 < figures["diff_no_se"]
