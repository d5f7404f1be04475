"""`senet analyze excitation` and `senet analyze se-drop` (paper Sec. 7.2) on a tiny trained se_resnet20."""

import json

import numpy as np
import pytest
import torch

from senet import complexity, load_model
from senet.analysis.complexity import count_params
from senet.analysis.excitation import override_excitation, se_blocks
from senet.cli import main
from senet.data import AugmentedDataset, EvalTransform, Normalize
from senet.data.spec import open_eval_data
from senet.weights.checkpoint import save_weights
from senet.weights.record import CheckpointRecord
from senet.engine.evaluate import eval_pipeline, evaluate
from senet.interop.load import load_for_evaluation
from senet.engine.train import train
from senet.models import create_model
from tests.training_fixtures import tiny_config

DATA = "synthetic:train=32,val=24,size=8,classes=3"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A se_resnet20 trained for one epoch (4 steps) on tiny synthetic data."""
    output = tmp_path_factory.mktemp("analyze") / "run"
    train(tiny_config(data__spec=DATA, train__batch_size=8), output, quiet=True)
    return output


def validation_inputs(run_dir, per_class=None):
    """(normalised images, labels) of the val split, built here from the data pieces (the first `per_class`
    images of each class)."""
    model = load_model(run_dir)
    cfg = model.pretrained_cfg
    val, _ = open_eval_data(DATA)
    labels = [val.label(i) for i in range(len(val))]
    keep = [i for i, label in enumerate(labels) if per_class is None or labels[: i + 1].count(label) <= per_class]
    dataset = AugmentedDataset(val, EvalTransform(cfg["input_size"][-1], cfg["crop_pct"], mode=val.pil_mode))
    samples = [dataset[(i, 0)] for i in keep]
    images = torch.from_numpy(np.stack([image for image, _ in samples])).permute(0, 3, 1, 2)
    return Normalize(cfg["mean"], cfg["std"])(images), torch.tensor([label for _, label in samples])


def naive_excitations(model, images):
    """s (N, C) of every SE block, from hooks on the blocks of a naive-SE copy (the formula as written)."""
    model.set_se_impl("naive")
    found = {}

    def keep(name):
        def hook(module, inputs, output):
            found[name] = module.excitation(inputs[0]).flatten(1)

        return hook

    hooks = [block.register_forward_hook(keep(name)) for name, block in se_blocks(model).items()]
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    return found


def test_excitation_json_equals_an_independent_computation(run, tmp_path, capsys):
    out = tmp_path / "exc"
    argv = ["analyze", "excitation", "--checkpoint", str(run), "--data", DATA, "--images-per-class", "3",
            "--channels", "5", "--output", str(out), "-q", "-j", "0"]
    assert main(argv) == 0
    assert "class spread" in capsys.readouterr().out
    result = json.loads((out / "excitation.json").read_text())
    model = load_model(run)
    images, labels = validation_inputs(run, per_class=3)
    assert result["images"] == len(labels) == 9 and result["counts"] == [3, 3, 3]
    s = naive_excitations(model, images)
    names = list(se_blocks(model))
    assert [block["name"] for block in result["blocks"]] == names == [f"SE_{a}_{b}" for a in (2, 3, 4) for b in (1, 2, 3)]
    classes = result["classes"]
    for block in result["blocks"]:
        values = s[block["name"]]
        assert block["channels"] == values.shape[1] and len(block["mean"]) == values.shape[1]
        assert block["sampled_channels"] == sorted(set(block["sampled_channels"])) and len(block["sampled_channels"]) == 5
        assert block["sampled_channels"][0] == 0 and block["sampled_channels"][-1] == values.shape[1] - 1
        assert np.allclose(block["mean"], values.mean(0), atol=2e-6)
        means = torch.stack([values[labels == c].mean(0) for c in range(3)])
        for c, name in enumerate(classes):
            assert np.allclose(block["per_class"][name], means[c], atol=2e-6)
            assert np.allclose(block["per_class_std"][name], values[labels == c].std(0, unbiased=False), atol=2e-6)
        assert block["class_spread"] == pytest.approx(float(means.std(0, unbiased=False).mean()), abs=2e-6)
        assert block["saturation"] == {"above_0.99": pytest.approx(float((values > 0.99).double().mean()), abs=1e-6),
                                       "below_0.01": pytest.approx(float((values < 0.01).double().mean()), abs=1e-6)}
    for figure in ("excitation.png", "excitation_spread.png"):
        assert (out / figure).read_bytes()[:4] == b"\x89PNG"


def test_excitation_blocks_filter_overwrite_and_all_images(run, tmp_path, capsys):
    out = tmp_path / "exc"
    base = ["analyze", "excitation", "--checkpoint", str(run / "model.safetensors"), "--data", DATA, "--output", str(out), "-q", "-j", "0"]
    assert main(base + ["--blocks", "SE_4_2", "layer1.0.se"]) == 0
    result = json.loads((out / "excitation.json").read_text())
    assert [(b["name"], b["module"]) for b in result["blocks"]] == [("SE_2_1", "layer1.0.se"), ("SE_4_2", "layer3.1.se")]
    assert result["images"] == 24  # fewer than 50 of each class: every image
    capsys.readouterr()
    assert main(base + ["--blocks", "all", "--images-per-class", "2"]) == 2  # the results are kept
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "already holds results" in err and "--overwrite" in err
    assert len(json.loads((out / "excitation.json").read_text())["blocks"]) == 2
    assert main(base + ["--blocks", "all", "--images-per-class", "2", "--overwrite"]) == 0
    result = json.loads((out / "excitation.json").read_text())
    assert len(result["blocks"]) == 9 and result["counts"] == [2, 2, 2]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--blocks", "SE_5_1"], "has no SE block 'SE_5_1'"),
        (["--classes", "cat"], "--classes names 'cat'"),
        (["--data", "synthetic:classes=5,size=8"], "trained on 3 classes but"),
        (["--data", "digit"], "unknown data 'digit'"),
        (["--checkpoint", "/nonexistent"], "checkpoint /nonexistent does not exist"),
    ],
)
def test_excitation_user_errors_are_one_line(run, tmp_path, capsys, extra, message):
    argv = ["analyze", "excitation", "--checkpoint", str(run), "--data", DATA, "--output", str(tmp_path / "o"), "-q", "-j", "0"]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    if "SE_5_1" in message:
        assert "SE_2_1, SE_2_2" in err and "SE_4_3" in err
    assert not (tmp_path / "o" / "excitation.json").exists()


@pytest.mark.parametrize("study, flag, message", [("excitation", ["--channels", "0"], "must be >= 1, got 0"),
                                                  ("se-drop", ["--replace", "zero"], "invalid choice: 'zero'")])
def test_invalid_options_exit_2(run, capsys, study, flag, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", study, "--checkpoint", str(run), *flag])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_a_checkpoint_without_se_is_a_one_line_error(tmp_path, capsys):
    val, _ = open_eval_data(DATA)
    meta = {"format": 1, "model": "resnet20", "kwargs": {"num_classes": 3}, "classes": val.classes, "channels": 3,
            "mean": list(val.mean), "std": list(val.std), "input_size": 8, "eval_crop_fraction": 0.875, "data": DATA}
    save_weights(tmp_path / "plain.safetensors", create_model("resnet20", num_classes=3).state_dict(), CheckpointRecord.from_dict(meta))
    for study in (["excitation", "--output", str(tmp_path / "o")], ["se-drop"]):
        assert main(["analyze", study[0], "--checkpoint", str(tmp_path / "plain.safetensors"), *study[1:], "-q"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "resnet20" in err and "has no SE blocks" in err and "se_*" in err


# -- se-drop ---------------------------------------------------------------------------------------


def se_drop(run, capsys, *extra, data=DATA):
    capsys.readouterr()
    assert main(["analyze", "se-drop", "--checkpoint", str(run), "--data", data, "--json", "-q", "--workers", "0", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_intact_row_is_exactly_senet_eval(run, capsys):
    drop = se_drop(run, capsys, "--batch-size", "5")
    assert main(["eval", "--checkpoint", str(run), "--data", DATA, "--json", "--workers", "0", "--batch-size", "5"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    intact = drop["rows"][0]
    assert intact["kind"] == "none" and intact["blocks"] == [] and intact["params"] == 0
    assert (intact["top1_err"], intact["top5_err"], intact["loss"]) == (evaluated["top1_err"], evaluated["top5_err"], evaluated["loss"])
    assert drop["images"] == evaluated["images"] == 24 and drop["checkpoint"] == evaluated["checkpoint"]


def remove_se(model, names):
    """The SE of these blocks physically taken out: each unit merges without SE, as a plain unit does."""
    blocks = se_blocks(model)
    for name in names:
        path = next(p for p, m in model.named_modules() if m is blocks[name])
        unit = model.get_submodule(path.rsplit(".", 1)[0])
        unit.se, unit.se_position = None, "none"
    return model


def test_one_as_the_excitation_is_the_block_removed(run):
    images, _ = validation_inputs(run)
    for impl in ("naive", "fused"):
        model = load_model(run)
        model.set_se_impl(impl)
        blocks = se_blocks(model)
        removed = remove_se(load_model(run), ["SE_3_2", "SE_4_3"])
        removed.set_se_impl(impl)
        with torch.no_grad(), override_excitation({blocks["SE_3_2"]: 1.0, blocks["SE_4_3"]: 1.0}):
            overridden = model(images)
        with torch.no_grad():
            intact, plain = model(images), removed(images)
        assert not torch.allclose(intact, plain, atol=1e-4)  # the SE blocks matter, and the hooks are gone after
        if impl == "naive":
            assert torch.equal(overridden, plain)  # x * 1 is x
        else:
            assert torch.allclose(overridden, plain, atol=1e-5)


def test_se_drop_rows_against_models_with_the_se_removed(run, capsys):
    drop = se_drop(run, capsys)
    model = load_model(run)
    names = list(se_blocks(model))
    rows = drop["rows"]
    stages = [row for row in rows if row["kind"] == "stage"]
    assert [row["removed"] for row in stages] == ["stage 2 (layer1)", "stage 3 (layer2)", "stage 4 (layer3)"]
    cumulative = [row for row in rows if row["kind"] == "cumulative"]
    assert [row["blocks"] for row in cumulative] == [names[-k:] for k in range(1, len(names) + 1)]
    assert len(rows) == 1 + 3 + 9
    stats = complexity(model, 8)
    se_params = {stage.name: stage.se_params for stage in stats.stages}
    for row, layer in zip(stages, ("layer1", "layer2", "layer3")):
        assert row["blocks"] == [n for n in names if n.startswith(f"SE_{int(layer[-1]) + 1}_")]
        assert row["params"] == se_params[layer] == sum(count_params(se_blocks(model)[n]) for n in row["blocks"])
    assert cumulative[-1]["params"] == stats.se_params and drop["params"] == stats.params
    pipeline = eval_pipeline(load_for_evaluation(run), DATA, workers=0)
    for row in stages + cumulative[:1] + cumulative[-1:]:
        result = evaluate(remove_se(load_model(run), row["blocks"]), pipeline.loader, pipeline.normalize)
        assert (row["top1_err"], row["top5_err"]) == (round(result.top1_err, 4), round(result.top5_err, 4))
        assert row["loss"] == pytest.approx(result.loss, abs=2e-4)
        assert row["d_top1"] == pytest.approx(row["top1_err"] - rows[0]["top1_err"])
        assert row["params_share"] == pytest.approx(row["params"] / stats.params, abs=1e-6)


def test_replace_mean_is_a_constant_scale_folded_into_the_last_bn(run, capsys):
    drop = se_drop(run, capsys, "--replace", "mean")
    assert drop["replace"] == "mean"
    images, _ = validation_inputs(run)
    mean = {name: s.mean(0) for name, s in naive_excitations(load_model(run), images).items()}
    pipeline = eval_pipeline(load_for_evaluation(run), DATA, workers=0)
    for row in [r for r in drop["rows"] if r["kind"] == "stage"]:
        folded = load_model(run)
        blocks = se_blocks(folded)
        for name in row["blocks"]:  # BN(c) * m: the BN's weight and bias scaled by m, then no SE
            path = next(p for p, m in folded.named_modules() if m is blocks[name])
            unit = folded.get_submodule(path.rsplit(".", 1)[0])
            with torch.no_grad():
                unit.bn2.weight.mul_(mean[name])
                unit.bn2.bias.mul_(mean[name])
        remove_se(folded, row["blocks"])
        result = evaluate(folded, pipeline.loader, pipeline.normalize)
        assert (row["top1_err"], row["top5_err"]) == (round(result.top1_err, 4), round(result.top5_err, 4))
        assert row["loss"] == pytest.approx(result.loss, abs=2e-4)


def test_se_drop_prints_a_table(run, capsys):
    assert main(["analyze", "se-drop", "--checkpoint", str(run), "--data", DATA, "-q", "-j", "0"]) == 0
    out = capsys.readouterr().out
    assert "nothing (intact)" in out and "stage 4 (layer3)" in out and "SE_2_1 .. SE_4_3 (9 blocks)" in out


def test_a_checkpoint_of_another_library_is_analysed_as_senet_eval_reads_it(tmp_path, capsys):
    from tests.interop.checkpoint_files import hub_folder, network

    hub = hub_folder(tmp_path / "hub", network("se_resnet18", layout="torchvision"))  # timm's seresnet18 files
    data = "synthetic:train=4,val=8,size=32,classes=4"
    drop = se_drop(hub, capsys, data=data)
    assert main(["eval", "--checkpoint", str(hub), "--data", data, "--json", "--workers", "0"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert (drop["rows"][0]["top1_err"], drop["rows"][0]["loss"]) == (evaluated["top1_err"], evaluated["loss"])
    assert drop["model"] == evaluated["model"] == "se_resnet18" and len(drop["rows"]) == 1 + 4 + 8
    assert main(["analyze", "excitation", "--checkpoint", str(hub), "--data", data, "--output", str(tmp_path / "o"),
                 "--blocks", "SE_5_2", "-q", "-j", "0"]) == 0
    assert [b["name"] for b in json.loads((tmp_path / "o" / "excitation.json").read_text())["blocks"]] == ["SE_5_2"]
