"""timm code from timm's documentation (feature extraction and quickstart pages), run unchanged but for the
import (`import senet as timm`) and the model name (an SE network both libraries have). In the peer
environment the same code also runs with timm itself, and the two agree in every shape and value."""

from __future__ import annotations

import textwrap

import pytest
import torch
from PIL import Image

import senet

TIMM_DOCS_CODE = textwrap.dedent('''
    # timm docs, "Feature Extraction": create with no classifier and pooling; remove it later
    m = timm.create_model('seresnet50', pretrained=False, num_classes=0, global_pool='')
    out["unpooled"] = m(x).shape
    m = timm.create_model('seresnet50', pretrained=False)
    m.reset_classifier(0, '')
    out["reset_unpooled"] = m(x).shape
    m = timm.create_model('seresnet50', pretrained=False, num_classes=0)
    out["pooled"] = m(x).shape
    m.reset_classifier(10, 'max')
    out["reset_max"] = m(x).shape
    # "Multi-scale Feature Maps (Feature Pyramid)"
    m = timm.create_model('seresnet50', features_only=True, out_indices=(1, 3), pretrained=False)
    out["feature_channels"] = m.feature_info.channels()
    out["feature_reductions"] = m.feature_info.reduction()
    out["feature_shapes"] = [o.shape for o in m(x)]
    # forward_intermediates
    m = timm.create_model('seresnet50', pretrained=False)
    final, intermediates = m.forward_intermediates(x)
    out["final"] = final.shape
    out["intermediates"] = [t.shape for t in intermediates]
    # quickstart: preprocessing from the model's config
    m = timm.create_model('seresnet50.a1_in1k', pretrained=False).eval()
    data_config = timm.data.resolve_model_data_config(m)
    transforms = timm.data.create_transform(**data_config, is_training=False)
    out["data_config"] = {k: data_config[k] for k in ("input_size", "interpolation", "crop_pct", "crop_mode", "mean", "std")}
    out["transformed"] = transforms(img).unsqueeze(0).shape
    out["cfg"] = {k: m.pretrained_cfg[k] for k in ("hf_hub_id", "input_size", "crop_pct", "interpolation", "num_classes")}
''')


def run_timm_docs(timm) -> dict:
    out: dict = {}
    img = Image.new("RGB", (320, 240), (120, 60, 200))
    exec(TIMM_DOCS_CODE, {"timm": timm, "x": torch.randn(1, 3, 224, 224), "img": img, "out": out})
    return out


EXPECTED = {
    "unpooled": torch.Size([1, 2048, 7, 7]), "reset_unpooled": torch.Size([1, 2048, 7, 7]),
    "pooled": torch.Size([1, 2048]), "reset_max": torch.Size([1, 10]),
    "feature_channels": [256, 1024], "feature_reductions": [4, 16],
    "feature_shapes": [torch.Size([1, 256, 56, 56]), torch.Size([1, 1024, 14, 14])],
    "final": torch.Size([1, 2048, 7, 7]),
    "intermediates": [torch.Size([1, 64, 112, 112]), torch.Size([1, 256, 56, 56]), torch.Size([1, 512, 28, 28]),
                      torch.Size([1, 1024, 14, 14]), torch.Size([1, 2048, 7, 7])],
    "transformed": torch.Size([1, 3, 224, 224]),
}


def test_timm_docs_code_runs_with_senet() -> None:
    out = run_timm_docs(senet)
    for key, value in EXPECTED.items():
        assert out[key] == value, key
    assert out["cfg"]["hf_hub_id"] == "timm/seresnet50.a1_in1k" and out["data_config"]["crop_pct"] == 0.95


@pytest.mark.peer
def test_peer_timm_docs_code_gives_what_timm_gives() -> None:
    timm = pytest.importorskip("timm")
    assert run_timm_docs(senet) == run_timm_docs(timm)
