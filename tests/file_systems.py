"""Real file systems that refuse writes, for the tests of senet's one-line file-system errors.

A small tmpfs fills up for real (ENOSPC), and a tmpfs remounted read-only refuses every write (EROFS), as a
full disk or a read-only mount would. Mounting needs root (CAP_SYS_ADMIN), which the test machines and CI
have; where it is refused, the tests that need a mount skip, saying why.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """tmpfs(name, size_kb, fill=None, read_only=False): a tmpfs of `size_kb` KiB at tmp_path/name, with
    `fill(path)` called to put files there first, then remounted read-only if asked; unmounted afterwards."""
    mounted: list[Path] = []

    def make(name: str, size_kb: int, fill: Callable[[Path], None] | None = None, read_only: bool = False) -> Path:
        path = tmp_path / name
        path.mkdir()
        if shutil.which("mount") is None:
            pytest.skip("no mount command to make a small or read-only file system")
        done = _mount("-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs", str(path))
        if done.returncode != 0:
            pytest.skip(f"this machine does not let the tests mount a tmpfs (needs root): {done.stderr.strip()}")
        mounted.append(path)
        if fill is not None:
            fill(path)
        if read_only:
            done = _mount("-o", "remount,ro", str(path))
            assert done.returncode == 0, done.stderr
        return path

    yield make
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (hidden ones too) -> the SHA-256 of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}
