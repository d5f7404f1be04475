"""Regenerate the zoo table of docs/models.md from the registry (`make readme`)."""

import re
import subprocess
import sys
from pathlib import Path

readme = Path(__file__).resolve().parents[1] / "docs" / "models.md"
table = subprocess.run(
    [sys.executable, "-m", "senet", "models", "--markdown"], check=True, capture_output=True, text=True
).stdout.strip()
text = readme.read_text()
text = re.sub(
    r"<!-- models-table -->.*?<!-- /models-table -->",
    lambda _: f"<!-- models-table -->\n{table}\n<!-- /models-table -->",
    text,
    flags=re.S,
)
readme.write_text(text)
print(f"updated {readme.name}: {table.count(chr(10)) - 1} model rows")
