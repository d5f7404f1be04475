"""Errors a user can cause. The CLI prints them as one line; anything else is a bug."""

from __future__ import annotations

import difflib
import errno
import os
import re
from collections.abc import Iterable
from pathlib import Path


class SenetError(ValueError):
    """A user error (bad option, unknown model, wrong shape, bad file) with a message that says the fix."""


class ConfigError(SenetError):
    """An invalid option or combination of options."""


class UnknownModelError(SenetError, KeyError):
    """A model name that is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class FileSystemError(SenetError):
    """A file or folder the file system refuses to write (read-only, full, over quota, no permission)."""


# What a file system answers when it refuses a write; anything else (ENOENT, EBADF, ...) is not the user's disk.
REFUSALS = (errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EIO)
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def refusal(error: BaseException, path: str | Path | None = None) -> int | None:
    """The errno of a file system's refusal behind `error`, or None: the error's own errno, the `(os error N)`
    that safetensors' messages carry, or, for writers that hide it (torch.save's "unexpected pos"), what the
    file system of `path` says: mounted read-only, or full."""
    number = error.errno if isinstance(error, OSError) else None
    if number is None:
        found = re.search(r"os error (\d+)|\[Errno (\d+)\]", str(error))
        number = int(found.group(1) or found.group(2)) if found else None
    if number is None and path is not None:
        folder = Path(path).absolute()
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            disk = os.statvfs(folder)
        except OSError:
            return None
        if disk.f_flag & os.ST_RDONLY:
            number = errno.EROFS
        elif disk.f_bavail * disk.f_frsize < 2**20:
            number = errno.ENOSPC
    return number if number in REFUSALS else None


def cause(number: int) -> str:
    """`read-only file system`, `no space left on device`, ...: the system's text for `number`, lower case."""
    text = os.strerror(number)
    return text[:1].lower() + text[1:]


def file_system_error(error: BaseException, path: str | Path | None = None, *, what: str = "write") -> FileSystemError | None:
    """`cannot write PATH: read-only file system` as a FileSystemError, if the file system refused; else None."""
    number = refusal(error, path)
    if number is None:
        return None
    path = path if path is not None else getattr(error, "filename", None)
    return FileSystemError(f"cannot {what} {path}: {cause(number)}" if path else f"cannot {what}: {cause(number)}")


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
