"""senet predict: the checkpoint's preprocessing and class names; unreadable images reported, others classified."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_files import CLASSES, META, network, png_folder, senet_file
from PIL import Image
from training_fixtures import SENET, subprocess_env

import senet
from senet.cli import main
from senet.interop.predict import image_files, predict


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("predict")
    return senet_file(root / "w.safetensors", network(), META | {"eval_crop_fraction": 0.8, "input_size": 24})


def test_predict_uses_the_checkpoints_preprocessing(tmp_path: Path, checkpoint: Path) -> None:
    folder = png_folder(tmp_path / "imgs")
    model = senet.load_model(checkpoint)
    files, missing = image_files([folder / "val", folder / "train" / "a" / "0.png"])
    assert len(files) == 13 and not missing and files == sorted(files[:-1]) + [str(folder / "train" / "a" / "0.png")]
    predictions, bad = predict(model, files, top=3, batch_size=5)
    assert not bad and [p.path for p in predictions] == files
    # by hand: the shorter side of the 40x36 image to 24 / 0.8 = 30, the centre 24x24, the file's mean and std
    image = Image.open(files[0]).convert("RGB")
    side = 36 * 0.8
    box = ((40 - side) / 2, (36 - side) / 2, (40 + side) / 2, (36 + side) / 2)
    pixels = np.asarray(image.resize((24, 24), Image.Resampling.BILINEAR, box=box), dtype=np.float32) / 255
    x = (torch.from_numpy(pixels).permute(2, 0, 1) - torch.tensor(META["mean"])[:, None, None]) / torch.tensor(META["std"])[:, None, None]
    with torch.no_grad():
        expected = model(x[None]).softmax(1)[0]
    values, indices = expected.topk(3)
    top = predictions[0].top
    assert [i for _, i, _ in top] == indices.tolist()
    assert [name for name, _, _ in top] == [CLASSES[i] for i in indices.tolist()]
    assert [p for _, _, p in top] == pytest.approx(values.tolist(), abs=1e-5)


def test_predict_cli_json_and_bad_images(tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = png_folder(tmp_path / "imgs", classes=("a",), per_class=2)
    (folder / "val" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code = main(["predict", "--checkpoint", str(checkpoint), str(folder / "val"), str(tmp_path / "missing.jpg"), "--top", "2", "--json"])
    captured = capsys.readouterr()
    assert code == 1
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("senet: error: cannot read image") for line in errors)
    assert "broken.png" in captured.err and "missing.jpg: no such file or folder" in captured.err
    rows = json.loads(captured.out)
    assert [Path(r["path"]).name for r in rows] == ["0.png", "1.png"]
    for row in rows:
        assert [set(entry) for entry in row["top"]] == [{"class", "index", "prob"}] * 2
        assert row["top"][0]["prob"] >= row["top"][1]["prob"] and row["top"][0]["class"] == CLASSES[row["top"][0]["index"]]
    assert main(["predict", "--checkpoint", str(checkpoint), str(folder / "val" / "a" / "0.png"), "--top", "1"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(folder / "val" / "a" / "0.png")) and line.endswith("%")


def test_predict_subprocess_user_error_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "page.pth").write_text("<html><head><title>404</title></head></html>")
    (tmp_path / "x.png").write_bytes(b"")
    result = subprocess.run([*SENET, "predict", "--checkpoint", str(tmp_path / "page.pth"), str(tmp_path / "x.png")],
                            capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("senet: error: ") and "is an HTML page" in result.stderr


def test_eval_transform_interpolation() -> None:
    from senet.data import EvalTransform
    from senet.errors import ConfigError

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    box = (5.0, 0.0, 35.0, 30.0)  # the centre square, crop fraction 1
    for name, resample in (("bicubic", Image.Resampling.BICUBIC), ("bilinear", Image.Resampling.BILINEAR)):
        out = EvalTransform(12, 1.0, mode="RGB", interpolation=name)(image)
        assert np.array_equal(out, np.asarray(image.resize((12, 12), resample, box=box)))
    with pytest.raises(ConfigError, match="unknown interpolation 'lanczos'"):
        EvalTransform(12, interpolation="lanczos")
