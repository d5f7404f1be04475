"""Parameter and MAC counts against the paper (Tables 2, 10, 13, 15, 16) and the reference ports."""

from __future__ import annotations

import pytest
import torch

import senet


def count(name: str, **kwargs):
    with torch.device("meta"):
        model = senet.create_model(name, **kwargs)
    return senet.complexity(model)


# Table 2: "GFLOPs" = GMACs at 224x224, plain and SE. Must match within 1%.
TABLE_2 = {
    "resnet50": 3.86, "se_resnet50": 3.87,
    "resnet101": 7.58, "se_resnet101": 7.60,
    "resnet152": 11.30, "se_resnet152": 11.32,
    "resnext50_32x4d": 4.24, "se_resnext50_32x4d": 4.25,
    "resnext101_32x4d": 7.99, "se_resnext101_32x4d": 8.00,
}  # fmt: skip


@pytest.mark.parametrize("name, gmacs", TABLE_2.items())
def test_table_2_gmacs(name: str, gmacs: float) -> None:
    assert count(name).gmacs == pytest.approx(gmacs, rel=0.01)


# paper-facts.md Sec. 8: exact parameter counts of the public ports (official layout).
PORT_PARAMS = {
    "se_resnet18": 11_778_592, "se_resnet34": 21_958_868, "se_resnet50": 28_088_024,
    "se_resnet101": 49_326_872, "se_resnet152": 66_821_848, "se_resnext50_32x4d": 27_559_896,
    "se_resnext101_32x4d": 48_955_416, "senet154": 115_088_984, "se_resnext101_64x4d": 88_232_984,
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160,
    "resnet152": 60_192_808, "resnext50_32x4d": 25_028_904, "resnext101_32x4d": 44_177_704,
    "resnext101_64x4d": 83_455_272,
}  # fmt: skip


@pytest.mark.parametrize("name, params", PORT_PARAMS.items())
def test_port_parameter_counts_are_exact(name: str, params: int) -> None:
    assert count(name).params == params


# Conv + linear GMACs of the ports (flop_counter); ours adds the SE pooling and scale, counted separately.
PORT_CONV_GMACS = {
    ("se_resnet18", "paper"): 1.814, ("se_resnet34", "paper"): 3.664, ("se_resnet50", "paper"): 3.860,
    ("se_resnet101", "paper"): 7.575, ("se_resnet152", "paper"): 11.289,
    ("se_resnext50_32x4d", "paper"): 4.233, ("se_resnext101_32x4d", "paper"): 7.975,
    ("senet154", "paper"): 20.688, ("se_resnet50", "torchvision"): 4.092,
    ("se_resnext101_64x4d", "torchvision"): 15.465, ("resnet50", "torchvision"): 4.089,
    ("resnet101", "torchvision"): 7.801, ("resnet152", "torchvision"): 11.514,
}  # fmt: skip


@pytest.mark.parametrize("name, layout", PORT_CONV_GMACS)
def test_port_conv_linear_gmacs(name: str, layout: str) -> None:
    stats = count(name, layout=layout)
    se_elementwise = sum(2 * block_input for block_input in _se_input_elements(name, layout))
    assert (stats.macs - se_elementwise) / 1e9 == pytest.approx(PORT_CONV_GMACS[name, layout], abs=0.0015)


def _se_input_elements(name: str, layout: str) -> list[int]:
    """C*H*W of every SE block's input: the SE squeeze (one add) and scale (one multiply) per element."""
    with torch.device("meta"):
        model = senet.create_model(name, layout=layout).set_se_impl("naive")  # the blocks called as modules
    sizes: list[int] = []
    for module in model.modules():
        if isinstance(module, senet.SqueezeExcitation):
            module.register_forward_hook(lambda m, i, o: sizes.append(i[0][0].numel()))
    model(torch.zeros(1, 3, 224, 224, device="meta"))
    return sizes


def test_se_resnet50_se_part() -> None:
    stats = count("se_resnet50")
    plain = count("resnet50")
    assert stats.se_blocks == 16
    assert stats.params - stats.se_params == plain.params
    # (2 / r) * sum_s N_s C_s^2 (Sec. 3.3) plus the FC biases.
    weights = 2 / 16 * (3 * 256**2 + 4 * 512**2 + 6 * 1024**2 + 3 * 2048**2)
    biases = sum(n * (c + c // 16) for n, c in [(3, 256), (4, 512), (6, 1024), (3, 2048)])
    assert stats.se_params == weights + biases
    assert stats.macs - stats.se_macs == plain.macs


# Table 10: reduction ratio, SE-ResNet-50 parameters (M).
@pytest.mark.parametrize("reduction, mparams", [(2, 45.7), (4, 35.7), (8, 30.7), (16, 28.1), (32, 26.9)])
def test_table_10_reduction_ratio_params(reduction: int, mparams: float) -> None:
    assert count("se_resnet50", reduction=reduction).mparams == pytest.approx(mparams, abs=0.2)


# Table 13: SE in one stage only.
@pytest.mark.parametrize("stages, mparams", [((2,), 25.6), ((3,), 25.7), ((4,), 26.4), ((2, 3, 4, 5), 28.1)])
def test_table_13_single_stage_params(stages: tuple[int, ...], mparams: float) -> None:
    stats = count("se_resnet50", se_stages=stages)
    assert stats.mparams == pytest.approx(mparams, abs=0.2)
    assert stats.se_blocks == sum({2: 3, 3: 4, 4: 6, 5: 3}[s] for s in stages)


def test_table_15_se_after_3x3() -> None:
    stats = count("se_resnet50", se_position="3x3")
    assert stats.mparams == pytest.approx(25.8, abs=0.2)
    assert stats.gmacs == pytest.approx(3.86, rel=0.01)


def test_table_16_no_squeeze() -> None:
    stats = count("se_resnet50", squeeze="none")
    assert stats.mparams == pytest.approx(28.1, abs=0.2)
    assert stats.gmacs == pytest.approx(4.27, rel=0.01)


def test_torchvision_layout_costs_more() -> None:
    # paper-facts.md Sec. 3: stride on the 3x3 costs 4.09 GMACs instead of 3.86.
    assert count("resnet50", layout="torchvision").gmacs == pytest.approx(4.09, abs=0.01)
    assert count("resnet50").gmacs == pytest.approx(3.86, abs=0.01)


def test_cifar_models_match_he_et_al() -> None:
    # He et al. 2016 Table 6 / Identity Mappings / WRN: 0.27M, 1.7M, 1.7M, 11.0M.
    assert count("resnet20").mparams == pytest.approx(0.27, abs=0.01)
    assert count("resnet110").mparams == pytest.approx(1.7, abs=0.05)
    assert count("resnet164").mparams == pytest.approx(1.7, abs=0.05)
    assert count("wrn16_8").mparams == pytest.approx(11.0, abs=0.05)


def test_complexity_counts_real_weights_and_restores_mode() -> None:
    model = senet.create_model("se_resnet20").train()
    stats = senet.complexity(model, 32)
    assert model.training
    assert stats.params == sum(p.numel() for p in model.parameters())
    assert stats.input_size == (3, 32, 32)
    assert [s.name for s in stats.stages][:4] == ["stem", "layer1", "layer2", "layer3"]
    assert sum(s.macs for s in stats.stages) == stats.macs
    assert senet.complexity(model, (3, 64, 64)).macs == pytest.approx(4 * stats.macs, rel=0.01)
    with pytest.raises(senet.ConfigError, match="does not fit"):
        senet.complexity(model, (64, 64))


def test_the_zoo_table_is_the_live_count() -> None:
    """`senet models` reads the registered models' counts from senet/analysis/zoo.json: it must be what
    counting every model now gives (after changing a model: `make readme`, or write_zoo_table())."""
    from senet.analysis.zoo import model_rows

    assert model_rows() == model_rows(live=True)
