"""Weights into a network: one strict load, and one error for every way a state dict can fail to fit."""

from __future__ import annotations

from torch import Tensor, nn

from senet.errors import SenetError


class StateDictMismatchError(SenetError):
    """A state dict that does not fit a network: keys missing or unexpected, or shapes that differ. The
    message names the first differing keys and both shapes."""


def _first(keys: list[str]) -> str:
    return f"{', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"


def state_dict_mismatch(network: nn.Module, state: dict[str, Tensor]) -> str:
    """What keeps `state` from loading strictly into `network`, in words ("" when it fits)."""
    expected = network.state_dict()
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items() if k in state and state[k].shape != v.shape]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    problems = []
    if wrong:
        key, got, want = wrong[0]
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        problems.append(f"{key} is {list(got)} in the file but {list(want)} in the model{more}")
    if missing:
        problems.append(f"{len(missing)} keys missing ({_first(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_first(unexpected)})")
    return "; ".join(problems)


def load_strict(network: nn.Module, state: dict[str, Tensor], what: str, into: str, fix: str) -> None:
    """`network.load_state_dict(state)` with every key present and every shape equal, else one
    StateDictMismatchError: "{what} do not fit {into}: <the first differences>; {fix}"."""
    problems = state_dict_mismatch(network, state)
    if problems:
        raise StateDictMismatchError(f"{what} do not fit {into}: {problems}; {fix}")
    network.load_state_dict(state, strict=True)
