"""timm's model API on senet's networks: create_model's signature, timm's names as aliases, pretrained_cfg,
global_pool, reset_classifier, forward_intermediates, prune_intermediate_layers.

Exactness against timm: the fixtures of tests/fixtures/peers hold timm's logits for weights drawn from a
seed (scripts/make_peer_fixtures.py); the `peer` tests compare live with timm in the peer environment.
"""

from __future__ import annotations

import inspect

import pytest
import torch

import senet
from senet.errors import ConfigError, UnknownModelError
from senet.interop.sources import recognise
from senet.models.timm_names import ALIASES, NOT_IN_SENET, PRETRAINED
from tests.peer_fixtures import PEERS, peer_input, peer_state_dict, read_fixture, relative_difference

TIMM_FIXTURES = {p.architecture: p for p in PEERS if p.library == "timm" and p.architecture in ALIASES}


def test_every_alias_has_a_peer_fixture() -> None:
    assert set(ALIASES) - {"legacy_senet154"} <= set(TIMM_FIXTURES) | {"legacy_senet154"}
    assert "seresnet50" in ALIASES and "legacy_seresnet50" in ALIASES
    assert "senet154" not in ALIASES and "senet154" in NOT_IN_SENET  # senet's own name, another layout in timm


@pytest.mark.parametrize("name", [n for n, p in TIMM_FIXTURES.items() if not p.slow])
def test_alias_is_the_network_timm_computes(name: str) -> None:
    """timm's weights load strictly into create_model(timm's name) and give timm's logits."""
    peer = TIMM_FIXTURES[name]
    fixture = read_fixture(peer)
    found = recognise(peer_state_dict(fixture["keys"]))
    model_name, kwargs = ALIASES[name]
    assert (found.model_name, found.model_kwargs) == (model_name, kwargs)
    model = senet.create_model(name).eval()
    model.load_state_dict(found.state_dict, strict=True)
    with torch.no_grad():
        logits = model(peer_input(peer.side))
    assert relative_difference(logits, fixture["logits"]) < 1e-5


def test_create_model_takes_timms_signature() -> None:
    model = senet.create_model("seresnet18", False, None, num_classes=7, in_chans=1, global_pool="avgmax",
                               drop_rate=0.1, drop_path_rate=0.05)
    assert model.num_classes == 7 and model.in_chans == 1 and model.global_pool.pool_type == "avgmax"
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 7)
    features = senet.create_model("legacy_seresnet50", features_only=True, out_indices=(1, 3))
    assert [m.shape[1] for m in features(torch.randn(1, 3, 64, 64))] == [256, 1024]
    with pytest.raises(UnknownModelError, match="did you mean 'seresnet50'"):
        senet.create_model("seresnet5")
    with pytest.raises(UnknownModelError, match="a1_in1k"):
        senet.create_model("seresnet50.in22k")


def test_pretrained_cfg_on_every_model() -> None:
    for name in ["se_resnet50", "se_resnet20", "mobilenet_v3_large", "vgg16_bn", "se_inception_v3"]:
        with torch.device("meta"):
            model = senet.create_model(name)
        cfg = model.pretrained_cfg
        assert model.default_cfg is cfg
        assert cfg["source"] == "senet" and cfg["architecture"] == name
        assert cfg["input_size"] == tuple(model.default_input_size)
        assert cfg["num_classes"] == model.num_classes
        model.get_submodule(cfg["first_conv"]) and model.get_submodule(cfg["classifier"])
    timm_cfg = senet.create_model("seresnet50.a2_in1k", num_classes=3).pretrained_cfg
    assert timm_cfg["hf_hub_id"] == "timm/seresnet50.a2_in1k" and timm_cfg["tag"] == "a2_in1k"
    assert timm_cfg["num_classes"] == 3 and timm_cfg["crop_pct"] == PRETRAINED["seresnet50"][1]["crop_pct"]
    assert senet.create_model("se_resnet18", pretrained_cfg_overlay={"crop_pct": 1.0}).pretrained_cfg["crop_pct"] == 1.0


@pytest.mark.parametrize("pool,width", [("avg", 512), ("max", 512), ("avgmax", 512), ("catavgmax", 1024)])
def test_global_pool(pool: str, width: int) -> None:
    model = senet.create_model("se_resnet18", global_pool=pool, num_classes=4).eval()
    x = torch.randn(2, 3, 64, 64)
    fmap = model.forward_features(x)
    expected = {"avg": fmap.mean((2, 3)), "max": fmap.amax((2, 3)),
                "avgmax": 0.5 * (fmap.mean((2, 3)) + fmap.amax((2, 3))),
                "catavgmax": torch.cat([fmap.mean((2, 3)), fmap.amax((2, 3))], 1)}[pool]
    torch.testing.assert_close(model.forward_head(fmap, pre_logits=True), expected)
    assert model.fc.in_features == width and model(x).shape == (2, 4)


def test_reset_classifier_global_pool() -> None:
    model = senet.create_model("se_resnet18").eval()
    x = torch.randn(2, 3, 64, 64)
    model.reset_classifier(0, "")
    torch.testing.assert_close(model(x), model.forward_features(x))
    model.reset_classifier(5, "catavgmax")
    assert model(x).shape == (2, 5) and model.pretrained_cfg["num_classes"] == 5
    with pytest.raises(ConfigError, match="num_classes=0"):
        model.reset_classifier(5, "")
    with pytest.raises(ConfigError, match="global_pool"):
        senet.create_model("mobilenet_v3_small", global_pool="catavgmax")
    with pytest.raises(ConfigError, match="unknown global_pool"):
        model.reset_classifier(5, "mean")


def test_forward_intermediates() -> None:
    model = senet.create_model("se_resnext26d_32x4d").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, maps = model.forward_intermediates(x)
        assert [m.shape[1] for m in maps] == model.feature_info.channels()
        torch.testing.assert_close(final, model.forward_features(x))
        features = senet.models.features.with_features_only(model, True)(x)
        for ours, theirs in zip(maps, features):
            torch.testing.assert_close(ours, theirs)
        early, two = model.forward_intermediates(x, indices=[1, -3], stop_early=True)
        torch.testing.assert_close(early, maps[2])
        assert [t.shape for t in two] == [maps[1].shape, maps[2].shape]
        only = model.forward_intermediates(x, indices=1, intermediates_only=True)
        assert len(only) == 1 and torch.equal(only[0], maps[-1])
    with pytest.raises(ConfigError, match="indices"):
        model.forward_intermediates(x, indices=[7])
    with pytest.raises(ConfigError, match="NCHW"):
        model.forward_intermediates(x, output_fmt="NHWC")


def test_prune_intermediate_layers() -> None:
    model = senet.create_model("se_resnet18").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = model.forward_intermediates(x, indices=[1, 2], intermediates_only=True)
        assert model.prune_intermediate_layers([1, 2]) == [1, 2]
        assert isinstance(model.layer3, torch.nn.Identity) and isinstance(model.layer4, torch.nn.Identity)
        torch.testing.assert_close(model(x), maps[1])  # no head: the last kept stage's map


# ---------------------------------------------------------------------------------------------------
# Live against timm (peer environment)


@pytest.mark.peer
def test_peer_signatures_match_timms() -> None:
    timm = pytest.importorskip("timm")
    theirs = timm.create_model("seresnet50")
    ours = senet.create_model("seresnet50")
    for method in ("forward_intermediates", "prune_intermediate_layers", "reset_classifier", "forward_head"):
        assert list(inspect.signature(getattr(ours, method)).parameters) == \
            list(inspect.signature(getattr(theirs, method)).parameters), method
    assert list(inspect.signature(senet.create_model).parameters)[:4] == \
        list(inspect.signature(timm.create_model).parameters)[:4]
    for key in ("input_size", "crop_pct", "interpolation", "mean", "std", "hf_hub_id", "num_classes", "pool_size"):
        assert ours.pretrained_cfg[key] == theirs.pretrained_cfg[key], key
    assert sorted(timm.list_models("*seres*") + timm.list_models("*senet154")) == \
        sorted(list(ALIASES) + list(NOT_IN_SENET))


def _calibrated_timm(timm, name: str) -> torch.nn.Module:
    """timm's model, randomly initialised, its BN statistics calibrated on random images (a few train-mode
    passes, momentum None = cumulative average), then in eval mode."""
    torch.manual_seed(0)
    model = timm.create_model(name)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None
            module.reset_running_stats()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 96, 96))
    return model.eval()


@pytest.mark.peer
@pytest.mark.parametrize("name,pool", [("seresnet50", "avg"), ("legacy_seresnet18", "catavgmax"),
                                       ("seresnext26d_32x4d", "avgmax")])
def test_peer_same_outputs_for_the_same_weights(name: str, pool: str) -> None:
    timm = pytest.importorskip("timm")
    theirs = _calibrated_timm(timm, name)
    theirs.reset_classifier(10, pool)
    torch.manual_seed(1)
    ours = senet.create_model(name, num_classes=10, global_pool=pool).eval()
    classifier = theirs.pretrained_cfg["classifier"]  # (recognised without it: catavgmax doubles its width)
    body = {k: v for k, v in theirs.state_dict().items() if not k.startswith(classifier + ".")}
    state = recognise(body).state_dict | {f"fc.{k}": v for k, v in theirs.get_classifier().state_dict().items()}
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-5)
        for kwargs in ({}, {"indices": 2}, {"indices": [0, 2], "stop_early": True}):
            (f_ours, m_ours), (f_theirs, m_theirs) = ours.forward_intermediates(x, **kwargs), theirs.forward_intermediates(x, **kwargs)
            torch.testing.assert_close(f_ours, f_theirs, rtol=1e-4, atol=1e-5)
            assert len(m_ours) == len(m_theirs)
            for a, b in zip(m_ours, m_theirs):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        f_ours = senet.create_model(name, features_only=True, out_indices=(1, 2, 3))
        f_ours.load_state_dict(ours.state_dict(), strict=False)
        f_theirs = timm.create_model(name, features_only=True, out_indices=(1, 2, 3))
        f_theirs.load_state_dict(theirs.state_dict(), strict=False)
        for a, b in zip(f_ours.eval()(x), f_theirs.eval()(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        assert f_ours.feature_info.channels() == f_theirs.feature_info.channels()


def test_docs_timm_names_table_is_current() -> None:
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "update_readme.py"
    spec = importlib.util.spec_from_file_location("update_readme", script)
    update_readme = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(update_readme)
    page = (script.parents[1] / "docs" / "models.md").read_text()
    assert f"<!-- timm-names -->\n{update_readme.timm_names_table()}\n<!-- /timm-names -->" in page, "make readme"
