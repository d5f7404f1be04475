"""The `senet` command: models, info, errors as one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import senet
from senet.cli import main
from senet.analysis.zoo import markdown_twin_table, model_rows


@pytest.fixture(scope="module")
def all_rows() -> list[dict]:
    """`senet models` rows for the whole zoo, computed once for this module."""
    return model_rows()


@pytest.mark.xdist_group("all_rows")  # one worker computes the zoo's rows (make test: --dist loadgroup)
def test_models_lists_every_registered_model(all_rows: list[dict], capsys: pytest.CaptureFixture[str]) -> None:
    assert [row["model"] for row in all_rows] == senet.list_models()
    se_resnet50 = next(row for row in all_rows if row["model"] == "se_resnet50")
    assert se_resnet50["params"] == 28_088_024 and se_resnet50["gmacs"] == pytest.approx(3.8715, abs=1e-4)
    assert main(["models", "se_resnet[15]?"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split() == ["se_resnet18", "3x224x224", "11.78M", "1.816", "resnet18"]
    assert "se_resnet50 " in out and "28.09M" in out and "3.872" in out and "se_resnet56 " in out


def test_models_json_filter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "se_resnet5?", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == ["se_resnet50", "se_resnet56"]
    assert rows[0]["params"] == 28_088_024 and rows[0]["plain_twin"] == "resnet50"


def test_info_se_resnet50_matches_the_paper(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "se_resnet50"]) == 0
    out = capsys.readouterr().out
    assert "28.09M" in out and "3.872" in out
    assert "plain twin resnet50: 25.56M params, 3.858 GMACs" in out
    assert "layer4" in out and "2048x7x7" in out


def test_info_takes_timm_names(capsys: pytest.CaptureFixture[str]) -> None:
    """`senet info seresnet50` counts timm's network (torchvision layout, widths rounded to 8), its plain twin in
    the same layout; `legacy_seresnet50` is the paper's."""
    assert main(["info", "seresnet50", "--json"]) == 0
    timm_style = json.loads(capsys.readouterr().out)
    assert main(["info", "legacy_seresnet50", "--json"]) == 0
    paper = json.loads(capsys.readouterr().out)
    assert timm_style["model"] == "seresnet50" and timm_style["kwargs"]["layout"] == "torchvision"
    assert timm_style["params"] == paper["params"] == 28_088_024
    assert timm_style["macs"] > paper["macs"]  # the stride on the 3x3: 4.10 against 3.87 GMACs
    assert timm_style["plain_twin"]["model"] == "resnet50" and timm_style["plain_twin"]["macs"] > paper["plain_twin"]["macs"]


def test_info_variant_flags_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "se_resnet50", "--reduction", "8", "--se-stages", "4,5", "--input", "160", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kwargs"] == {"reduction": 8, "se_stages": [4, 5]}
    assert info["input_size"] == [3, 160, 160]
    assert info["se_blocks"] == 9


@pytest.mark.parametrize("name", senet.list_models(se=True))
def test_info_add_se_refuses_every_se_model(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An SE model (se_resnet50, senet154, mobilenet_v3_large) already has SE: one line naming its plain twin."""
    assert main(["info", name, "--add-se"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"senet: error: {name} already has SE blocks; --add-se adds SE to a plain model: drop --add-se, "
                   f"or use its plain twin ('senet info {senet.plain_twin(name)} --add-se')\n")


@pytest.mark.parametrize(
    "flags",
    [
        ["--reduction", "8"],
        ["--reduction", "16,16,16,8"],
        ["--se-stages", "4,5"],
        ["--se-position", "pre", "--gate", "tanh", "--squeeze", "max", "--no-se-bias"],
    ],
)
def test_info_add_se_counts_the_variant_the_se_flags_ask_for(flags: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """With --add-se the SE flags are add_se's options: resnet50 + SE costs what se_resnet50 does with them."""
    assert main(["info", "resnet50", "--add-se", *flags, "--json"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert main(["info", "se_resnet50", *flags, "--json"]) == 0
    twin = json.loads(capsys.readouterr().out)
    keys = ("params", "macs", "se_blocks", "se_params", "se_macs")
    assert {k: added[k] for k in keys} == {k: twin[k] for k in keys}
    assert added["add_se"] is True and added["kwargs"] == twin["kwargs"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "se_resnt50"], "unknown model 'se_resnt50' (did you mean 'se_resnet50'"),
        (["info", "resnet50", "--reduction", "8"], "resnet50 has no SE blocks"),
        (["info", "se_resnet50", "--se-stages", "3,x"], "--se-stages takes comma-separated"),
        (["info", "se_resnet50", "--reduction", "4096"], "reduction 4096 is larger than"),
    ],
)
def test_user_errors_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("senet: error: ") and message in err
    assert err.count("\n") == 1


def test_python_dash_m_entry_point() -> None:
    result = subprocess.run([sys.executable, "-m", "senet", "info", "se_resnet20"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "se_resnet20  input 3x32x32" in result.stdout


def test_docs_quoted_senet_outputs_are_current() -> None:
    """The `<!-- senet-output: ARGS -->` blocks of README.md and docs/*.md are the real output of `senet ARGS`;
    regenerate them (`make readme`) when it changes."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "update_readme.py"
    if not script.exists():
        pytest.skip("scripts/ is not next to the tests (installed package)")
    spec = importlib.util.spec_from_file_location("update_readme", script)
    update_readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(update_readme)
    blocks = [(page.name, m) for page in update_readme.quoting_pages() for m in update_readme.OUTPUT_BLOCK.finditer(page.read_text())]
    assert {name for name, _ in blocks} >= {"README.md", "add-se.md"}
    for name, match in blocks:
        assert match[0] == update_readme.output_block(match["args"]), f"{name}: `senet {match['args']}` is stale"


@pytest.mark.xdist_group("all_rows")
def test_docs_model_table_is_current(all_rows: list[dict]) -> None:
    """docs/models.md's zoo table is `senet models --markdown`; regenerate it (`make readme`) when models change."""
    from pathlib import Path

    readme = Path(__file__).resolve().parents[1] / "docs" / "models.md"
    if not readme.exists():
        pytest.skip("docs/models.md is not next to the tests (installed package)")
    table = markdown_twin_table(all_rows)
    text = readme.read_text()
    start, end = text.index("<!-- models-table -->"), text.index("<!-- /models-table -->")
    assert text[start:end].strip().removeprefix("<!-- models-table -->").strip() == table


def test_models_and_info_print_the_same_gmacs(capsys: pytest.CaptureFixture[str]) -> None:
    """GMACs are rounded once, from the exact count (0.13746 is 0.137, not 0.1375 rounded again to 0.138)."""
    assert main(["models", "shufflenet_v1_g3"]) == 0
    listed = capsys.readouterr().out.splitlines()[1].split()[3]
    assert main(["info", "shufflenet_v1_g3"]) == 0
    info = next(line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("GMACs")).split()[1]
    assert listed == info == "0.137"
