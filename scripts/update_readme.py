"""Regenerate what the docs quote from `senet` (`make readme`): the zoo's counts (src/senet/analysis/zoo.json,
which `senet models` reads), the zoo table of docs/models.md, and every
block of README.md and docs/*.md between `<!-- senet-output: ARGS -->` and `<!-- /senet-output -->`, which
becomes a `$ senet ARGS` fence with the command's real output (`ARGS | head -N`: its first N lines, then
`  ...`). Only cheap commands belong there (info, models): the tests run each one to check the docs.
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


def main() -> None:
    from senet.analysis.zoo import write_zoo_table

    print(f"counted every registered model into {write_zoo_table().relative_to(ROOT)}")
    print(f"updated models.md: {update_models_table()} model rows")
    for page in quoting_pages():
        text = page.read_text()
        blocks = len(OUTPUT_BLOCK.findall(text))
        if blocks:
            page.write_text(update_output_blocks(text))
            print(f"updated {page.relative_to(ROOT)}: {blocks} senet output block(s)")


if __name__ == "__main__":
    main()
