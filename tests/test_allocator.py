"""senet's processes keep freed memory for the next training step (`senet.allocator`, glibc)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from senet import allocator

CYCLE = """
import importlib.util, os, resource, sys
def load(name, path):  # a module alone, not the senet package (whose import loads torch: seconds a process)
    spec = importlib.util.spec_from_file_location(name, path)
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
load("senet.errors", os.path.join(os.path.dirname(sys.argv[2]), "errors.py"))
allocator = load("allocator", sys.argv[2])
if sys.argv[1] == "keep":
    assert allocator.keep_freed_memory()
size = 64 << 20
def cycle():
    block = bytearray(size)          # larger than glibc's largest mmap threshold (32 MiB)
    block[::4096] = bytes(size // 4096)
    del block
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
cycle()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
assert "torch" not in sys.modules
"""


def faults_of_a_second_cycle(mode: str, env: dict[str, str] | None = None) -> int:
    done = subprocess.run([sys.executable, "-c", CYCLE, mode, allocator.__file__], capture_output=True, text=True, check=True,
                          env={**os.environ, **(env or {})})
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc (Linux) only")
def test_kept_memory_is_reused_without_page_faults() -> None:
    pages = (64 << 20) // 4096
    assert faults_of_a_second_cycle("system") >= pages // 2  # returned to the system, faulted in again
    assert faults_of_a_second_cycle("keep") < pages // 100
    assert allocator.TUNABLES == "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2147483647"  # as documented
    tunables = {"GLIBC_TUNABLES": allocator.TUNABLES}
    assert faults_of_a_second_cycle("system", tunables) < pages // 100  # the documented form for scripts


def test_senet_malloc_system_leaves_malloc_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(allocator.ENV, "system")
    monkeypatch.setattr(allocator, "_kept", False)
    assert allocator.keep_freed_memory() is False
    assert allocator.describe() == "system default"


def test_an_unknown_senet_malloc_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from senet.cli import main as cli_main
    from senet.errors import ConfigError

    monkeypatch.setenv(allocator.ENV, "sytem")
    with pytest.raises(ConfigError, match="unknown SENET_MALLOC 'sytem'.*system"):
        allocator.keep_freed_memory()
    assert cli_main(["models"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("senet: error: unknown SENET_MALLOC 'sytem'")
