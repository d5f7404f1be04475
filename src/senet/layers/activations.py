"""Activations and excitation gates as modules, built from strings (paper Sec. 6.3, Table 11).

Gates are modules (not functions) so that export and quantisation see them.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from senet.errors import check_choice

# The excitation gate sigma in s = sigma(W2 delta(W1 z)). The paper's default is the sigmoid;
# Table 11 compares tanh and ReLU; MobileNetV3 uses the hard sigmoid relu6(x + 3) / 6.
GATES: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "hard_sigmoid": nn.Hardsigmoid,
}

# The bottleneck non-linearity delta (ReLU in the paper).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "hard_swish": nn.Hardswish,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,
}


def get_gate(name: str) -> nn.Module:
    """The excitation gate module called `name` (sigmoid, tanh, relu, hard_sigmoid)."""
    return GATES[check_choice("gate", name, GATES)]()


def get_act(name: str, inplace: bool = False) -> nn.Module:
    """The activation module called `name` (relu, relu6, silu, gelu, hard_swish, leaky_relu, identity)."""
    factory = ACTIVATIONS[check_choice("activation", name, ACTIVATIONS)]
    if inplace and name in ("relu", "relu6", "silu", "hard_swish", "leaky_relu"):
        return factory(inplace=True)  # type: ignore[call-arg]
    return factory()
