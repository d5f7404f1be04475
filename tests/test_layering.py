"""The package graph: no import cycles between files or subpackages (imports inside functions included), and
data flows one way: cli -> analysis -> engine / interop / bench -> weights / data -> models -> layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Each part of senet and its level: a module may import from its own level and below, never above.
LEVELS = {
    "cli": 6, "__main__": 6,
    "analysis": 5,
    "engine": 4, "interop": 4, "bench": 4,
    "weights": 3, "data": 3,
    "models": 2,
    "layers": 1,
    "errors": 0, "options": 0, "lazy": 0, "allocator": 0, "recipes": 0,
}


def modules() -> dict[str, Path]:
    found = {".".join(p.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__"): p for p in (SRC / "senet").rglob("*.py")}
    assert "senet.weights.checkpoint" in found and "senet.cli" in found
    return found


def file_graph() -> dict[str, set[str]]:
    """{module: the senet modules it imports}, every import statement of the file (inside functions too)."""
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for module, path in mods.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for target in targets:
                if target.split(".")[0] == "senet":
                    resolved = resolve(target)
                    # A package's __init__ may gather its own modules (its public names).
                    if resolved and resolved != module and not (path.name == "__init__.py" and resolved.startswith(module + ".")):
                        graph[module].add(resolved)
    return graph


def part(module: str) -> str:
    """The subpackage (or top-level module) of senet that `module` belongs to."""
    return module.split(".")[1] if module.count(".") >= 1 else module


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_file_imports_another_that_imports_it_back():
    assert cycles(file_graph()) == []


def test_no_subpackage_imports_another_that_imports_it_back():
    graph: dict[str, set[str]] = {}
    for module, targets in file_graph().items():
        if module == "senet":
            continue  # the public API's namespace (its names are imported when first used)
        graph.setdefault(part(module), set()).update(part(t) for t in targets if part(t) != part(module) and t != "senet")
    assert cycles(graph) == []


def test_data_flows_one_way():
    against = [
        f"{module} ({part(module)}, level {LEVELS[part(module)]}) imports {target} ({part(target)}, level {LEVELS[part(target)]})"
        for module, targets in file_graph().items() if module != "senet"
        for target in targets if target != "senet" and LEVELS[part(target)] > LEVELS[part(module)]
    ]
    assert against == []


def test_weights_io_imports_only_models_layers_and_errors():
    below = {"weights", "models", "layers", "errors", "options", "lazy"}
    assert {part(t) for m, ts in file_graph().items() if part(m) == "weights" for t in ts} <= below


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}, "c": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
])
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert cycles(graph) == expected


def test_the_command_line_starts_without_torch():
    """`senet --help` and every `senet COMMAND --help` build their parsers from senet.options alone."""
    import subprocess
    import sys

    code = (
        "import contextlib, io, sys\n"
        "from senet.cli import build_parser\n"
        "parser = build_parser()\n"
        "for command in [[], *[[name] for name in parser.get_default('_parsers')]]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        parser.parse_args([*command, '--help'])\n"
        "print(sorted(m for m in ('torch', 'numpy', 'yaml', 'PIL') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=SRC.parent)
    assert out.stdout.strip() == "[]"
