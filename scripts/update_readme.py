"""Regenerate what the docs quote from `senet` (`make readme`): the zoo's counts (src/senet/analysis/zoo.json,
which `senet models` reads), the zoo table of docs/models.md, and every
block of README.md and docs/*.md between `<!-- senet-output: ARGS -->` and `<!-- /senet-output -->`, which
becomes a `$ senet ARGS` fence with the command's real output (`ARGS | head -N`: its first N lines, then
`  ...`). Only cheap commands belong there (info, models): the tests run each one to check the docs.

Examples that run (`run_page`, checked by tests/test_docs_run.py in `make test`): a fence right after
`<!-- run -->` is executed, each page's in order in one temporary folder and one Python namespace. A python
fence runs as written, or as a doctest where it has `>>>` lines (the output shown must be the output); a
text fence runs each `$ senet ARGS` line and every output line shown under it (but `...`) must be a line of
the real output. `<!-- run-setup ... -->` holds hidden Python that prepares a page's files first.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT_BLOCK = re.compile(r"<!-- senet-output: (?P<args>.*?) -->\n.*?<!-- /senet-output -->", re.S)


def quoting_pages() -> list[Path]:
    """The pages that may hold senet-output blocks."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def command_output(args: str) -> str:
    """The stdout of `senet ARGS` (run in this process), cut to N lines by a trailing `| head -N`."""
    from senet.cli import main

    args, _, head = args.partition("| head -")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        status = main(shlex.split(args))
    if status != 0:
        raise RuntimeError(f"`senet {args.strip()}` exited with status {status}")
    lines = buffer.getvalue().rstrip("\n").split("\n")
    if head and len(lines) > int(head):
        lines = [*lines[: int(head)], "  ..."]
    return "\n".join(lines)


def output_block(args: str) -> str:
    """The whole marked block for `senet ARGS`, markers included."""
    shown = args.partition("| head -")[0].strip()
    return f"<!-- senet-output: {args} -->\n```text\n$ senet {shown}\n{command_output(args)}\n```\n<!-- /senet-output -->"


def update_output_blocks(text: str) -> str:
    return OUTPUT_BLOCK.sub(lambda match: output_block(match["args"]), text)


def update_models_table() -> int:
    page = ROOT / "docs" / "models.md"
    table = command_output("models --markdown")
    text = re.sub(
        r"<!-- models-table -->.*?<!-- /models-table -->",
        lambda _: f"<!-- models-table -->\n{table}\n<!-- /models-table -->",
        page.read_text(),
        flags=re.S,
    )
    page.write_text(text)
    return table.count("\n") - 1


RUN_BLOCK = re.compile(r"<!-- run -->\n```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)
SETUP_BLOCK = re.compile(r"<!-- run-setup\n(?P<body>.*?)-->", re.S)


def run_page(page: Path, folder: Path) -> int:
    """Run the page's `<!-- run -->` examples in `folder` (module docstring); AssertionError naming the first
    example whose output differs or that fails. Returns how many ran."""
    import doctest
    import os

    text = page.read_text()
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}", "DOCS_ROOT": ROOT}
    previous = Path.cwd()
    os.chdir(folder)
    try:
        for setup in SETUP_BLOCK.finditer(text):
            exec(compile(setup["body"], f"{page.name} (setup)", "exec"), namespace)
        count = 0
        for block in RUN_BLOCK.finditer(text):
            line = text[: block.start()].count("\n") + 2
            where = f"{page.name}:{line}"
            body = block["body"]
            if block["lang"] == "python" and ">>>" in body:
                test = doctest.DocTestParser().get_doctest(body, namespace, where, str(page), line)
                runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
                report = io.StringIO()
                runner.run(test, out=report.write)
                namespace.update(test.globs)
                assert runner.failures == 0, f"{where}: the example's output is stale:\n{report.getvalue()}"
            elif block["lang"] == "python":
                exec(compile(body, where, "exec"), namespace)
            else:
                _run_commands(body, where)
            count += 1
        return count
    finally:
        os.chdir(previous)


def _run_commands(body: str, where: str) -> None:
    """Each `$ senet ARGS` line of a text fence, run; every line shown under it (but `...`) must be in its output."""
    from senet.cli import main as senet_main

    commands = re.split(r"^\$ ", body, flags=re.M)[1:]
    for command in commands:
        first, *shown = command.rstrip("\n").split("\n")
        args = shlex.split(first)
        assert args[0] == "senet", f"{where}: only `$ senet ...` lines run, got `{first}`"
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            status = senet_main(args[1:])
        assert status == 0, f"{where}: `{first}` exited with status {status}"
        output = buffer.getvalue().splitlines()
        for expected in shown:
            if expected.strip() in ("...", ""):
                continue
            assert expected in output, f"{where}: `{first}` no longer prints `{expected}`; it printed:\n" + "\n".join(output)


def timm_names_table() -> str:
    """docs/models.md's table of timm's SE names: the senet network each is, or what senet lacks."""
    from senet.models.timm_names import ALIASES, NOT_IN_SENET, PRETRAINED, TIMM_VERSION

    lines = [f"| timm {TIMM_VERSION} name | senet network | timm's pretrained tags |", "|---|---|---|"]
    for name, (model, kwargs) in ALIASES.items():
        options = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        tags = ", ".join(entry["tag"] for entry in PRETRAINED.get(name, [])) or "-"
        lines.append(f"| `{name}` | `{model}({options})` | {tags} |")
    for name, why in NOT_IN_SENET.items():
        lines.append(f"| `{name}` | none: {why} | |")
    return "\n".join(lines)


def update_timm_names_table() -> None:
    page = ROOT / "docs" / "models.md"
    text = re.sub(r"<!-- timm-names -->.*?<!-- /timm-names -->",
                  lambda _: f"<!-- timm-names -->\n{timm_names_table()}\n<!-- /timm-names -->", page.read_text(), flags=re.S)
    page.write_text(text)


def main() -> None:
    from senet.analysis.zoo import write_zoo_table

    print(f"counted every registered model into {write_zoo_table().relative_to(ROOT)}")
    print(f"updated models.md: {update_models_table()} model rows")
    update_timm_names_table()
    for page in quoting_pages():
        text = page.read_text()
        blocks = len(OUTPUT_BLOCK.findall(text))
        if blocks:
            page.write_text(update_output_blocks(text))
            print(f"updated {page.relative_to(ROOT)}: {blocks} senet output block(s)")


if __name__ == "__main__":
    main()
