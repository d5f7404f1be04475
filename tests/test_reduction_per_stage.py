"""A reduction ratio per SE stage: `create_model(..., reduction=(16, 16, 16, 8))`, the CLI and `add_se`."""

from __future__ import annotations

import pytest
import torch

import senet
from senet.cli import build_parser
from senet.cli.args import model_kwargs, reduction_arg
from senet.errors import ConfigError
from senet.layers import SqueezeExcitation

RESNET50_UNITS = {256: 3, 512: 4, 1024: 6, 2048: 3}  # SE width (stage output) -> units, conv2_x .. conv5_x


def se_params(channels: int, reduction: int) -> int:
    """fc1 and fc2 with biases: 2 C h + h + C, h = C // r (Sec. 3.2)."""
    hidden = channels // reduction
    return 2 * channels * hidden + hidden + channels


def test_one_ratio_per_stage_counted_by_hand():
    reductions = (16, 16, 16, 8)
    model = senet.create_model("se_resnet50", reduction=reductions)
    plain = senet.create_model("resnet50")
    expected = sum(units * se_params(c, r) for (c, units), r in zip(RESNET50_UNITS.items(), reductions))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model) - count(plain) == expected
    assert senet.complexity(model, (3, 224, 224)).params == count(plain) + expected
    assert model.layer4[0].se.hidden_channels == 2048 // 8 and model.layer3[0].se.hidden_channels == 1024 // 16


def test_ratios_follow_se_stages():
    model = senet.create_model("se_resnet50", reduction=(4, 8), se_stages=(4, 5))
    assert model.layer2[0].se is None
    assert model.layer3[0].se.hidden_channels == 1024 // 4 and model.layer4[0].se.hidden_channels == 2048 // 8


def test_a_uniform_tuple_is_the_single_ratio():
    torch.manual_seed(0)
    a = senet.create_model("se_resnet20", reduction=(8, 8, 8))
    torch.manual_seed(0)
    b = senet.create_model("se_resnet20", reduction=8)
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(a.eval()(x), b.eval()(x))


def test_other_families():
    v3 = senet.create_model("mobilenet_v3_large", reduction=(4, 4, 2))  # SE stages 3, 4, 5
    widths = {se.channels: se.hidden_channels for se in v3.modules() if isinstance(se, SqueezeExcitation)}
    assert widths[960] == 480  # stage 5 at r = 2 (a multiple of 8)
    irv2 = senet.create_model("se_inception_resnet_v2", reduction=(16, 16, 8), num_classes=0)
    assert irv2.repeat_2[0].se.hidden_channels == 2080 // 8 and irv2.repeat[0].se.hidden_channels == 320 // 16


@pytest.mark.parametrize("bad, match", [
    ((16, 16, 16), "3 ratios for 4 SE stages"),
    ((16, 16, 16, 16, 16), "5 ratios for 4 SE stages"),
    ((16, 0, 16, 16), "positive ints"),
    ((16, 8.5, 16, 16), "positive ints"),
    ((), "positive ints"),
])
def test_bad_tuples_are_one_line_errors(bad, match):
    with pytest.raises(ConfigError, match=match) as error:
        senet.create_model("se_resnet50", reduction=bad)
    assert "\n" not in str(error.value)


def test_cli_flag():
    assert reduction_arg("16,16,16,8") == (16, 16, 16, 8)
    assert reduction_arg("16") == 16 and reduction_arg("8.5") == 8.5
    args = build_parser().parse_args(["info", "se_resnet50", "--reduction", "16,16,16,8"])
    assert model_kwargs(args)["reduction"] == (16, 16, 16, 8)


def test_cli_info_counts_it(capsys):
    senet.cli.main(["info", "se_resnet50", "--reduction", "16,16,16,8"])
    out = capsys.readouterr().out
    plain = sum(p.numel() for p in senet.create_model("resnet50").parameters())
    expected = sum(units * se_params(c, r) for (c, units), r in zip(RESNET50_UNITS.items(), (16, 16, 16, 8)))
    assert f"{plain + expected:,d}" in out
    assert "5 (layer4)" in out  # the stage table numbers its stages as with a single ratio


def test_add_se_per_stage_equals_the_se_twin():
    torch.manual_seed(0)
    added = senet.add_se(senet.create_model("resnet50"), reduction=(16, 16, 16, 8))
    twin = senet.create_model("se_resnet50", reduction=(16, 16, 16, 8))
    assert {k: v.shape for k, v in added.state_dict().items()} == {k: v.shape for k, v in twin.state_dict().items()}
    assert [s.hidden for s in added.se_report.sites][-1] == 2048 // 8
