"""The examples of README.md and docs/*.md marked `<!-- run -->` run and print what the docs show
(scripts/update_readme.py's `run_page`): a stale example fails here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "update_readme.py"


def _update_readme():
    spec = importlib.util.spec_from_file_location("update_readme", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PAGES = [p for p in _update_readme().quoting_pages() if "<!-- run -->" in p.read_text()] if SCRIPT.exists() else []


def test_pages_with_examples_that_run() -> None:
    assert {p.name for p in PAGES} >= {"README.md", "weights.md", "add-se.md"}


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_docs_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # (no cache of the machine's is read)
    for variable in ("HF_HUB_CACHE", "HF_HOME", "TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    assert _update_readme().run_page(page, tmp_path) > 0
