"""Errors a user can cause. The CLI prints them as one line; anything else is a bug."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SenetError(ValueError):
    """A user error (bad option, unknown model, wrong shape, bad file) with a message that says the fix."""


class ConfigError(SenetError):
    """An invalid option or combination of options."""


class UnknownModelError(SenetError, KeyError):
    """A model name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def shown(value: object) -> str:
    """A setting as a message shows it: floats as their shortest round-trip text after rounding away float
    noise (0.1 * 3 -> 0.3, not 0.30000000000000004), everything else as str()."""
    if isinstance(value, float):
        return repr(float(f"{value:.12g}"))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(shown(item) for item in value) + "]"
    return str(value)


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> str:
    """`" (did you mean 'a', 'b'?)"` for the closest choices, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.5)
    if not close:
        return ""
    return " (did you mean " + ", ".join(repr(c) for c in close) + "?)"


def or_list(names: Iterable[str]) -> str:
    """'a, b or c': a help or error text naming each of `names` (a constant of the module that owns them)."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def check_choice(name: str, value: str, choices: Iterable[str]) -> str:
    """Return `value` if it is one of `choices`, else raise a ConfigError listing them."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(
            f"unknown {name} {value!r}{did_you_mean(str(value), choices)}; choose one of: {', '.join(choices)}"
        )
    return value
