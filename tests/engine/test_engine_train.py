"""The training loop in-process: outputs, determinism, NaN guard, bf16, channels_last, EMA, accumulation."""

import json

import pytest
import torch
import yaml
from training_fixtures import make_tree, tiny_config

from senet.weights.checkpoint import checkpoint_dirs, load_checkpoint, load_weights
from senet.engine.evaluate import evaluate_network
from senet.interop.load import load_for_evaluation
from senet.engine.train import Trainer, TrainingDiverged, train
from senet.errors import ConfigError


def weights_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_writes_config_metrics_checkpoints_and_final_weights(tmp_path):
    result = train(tiny_config(schedule__epochs=2), tmp_path / "run", quiet=True)
    run = tmp_path / "run"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["input_size"] == 8 and config["data"]["mean"] == [0.5, 0.5, 0.5]  # resolved, not null
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2] and rows[-1]["step"] == 8
    for key in ("train_loss", "val_loss", "val_top1_err", "val_top5_err", "images_per_s", "lr"):
        assert isinstance(rows[-1][key], float)
    assert rows[-1]["train_images"] == 64
    assert [p.name for p in checkpoint_dirs(run)] == ["step-00000008", "step-00000004"]
    state, record = load_weights(run / "model.safetensors")
    assert record.model == "se_resnet20" and record.kwargs == {"num_classes": 4, "in_chans": 3}
    assert record.classes == ("class_0", "class_1", "class_2", "class_3") and record.input_size == 8
    assert weights_equal(state, {k: v for k, v in result.model.state_dict().items()})
    # senet eval rebuilds the model from the metadata alone and agrees with the last epoch's evaluation.
    evaluated = evaluate_network(load_for_evaluation(run), tiny_config().data.spec, workers=0)
    assert evaluated["images"] == 16
    assert evaluated["top1_err"] == pytest.approx(rows[-1]["val_top1_err"], abs=1e-3)
    assert evaluated["loss"] == pytest.approx(rows[-1]["val_loss"], abs=1e-3)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    a = train(tiny_config(), tmp_path / "a", quiet=True).model.state_dict()
    b = train(tiny_config(), tmp_path / "b", quiet=True).model.state_dict()
    c = train(tiny_config(train__seed=1), tmp_path / "c", quiet=True).model.state_dict()
    assert weights_equal(a, b)
    assert not weights_equal(a, c)


def test_digits_are_learned(tmp_path):
    config = tiny_config(model__name="resnet20", data__spec="digits", train__batch_size=32, optim__lr=0.1, data__pad=1,
                         schedule__name="cosine")
    row = train(config, tmp_path, quiet=True).final
    assert row["train_loss"] < 2.2  # ln(10) = 2.30 at chance
    assert row["val_top1_err"] < 75  # chance is 90% (364 images: +-1.6%)


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_config(optim__lr=1e12, train__checkpoint_every=1, data__spec="synthetic:train=160,val=16,size=8,classes=4")
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf|finite, but).*last good checkpoint is .*step-0000000\d.*--resume") as error:
        train(config, tmp_path, quiet=True)
    assert "\n" not in str(error.value)
    kept = checkpoint_dirs(tmp_path)
    assert kept
    for path in kept:
        checkpoint = load_checkpoint(path)
        assert all(torch.isfinite(v).all() for v in checkpoint.model.values() if v.is_floating_point())


def test_bf16_autocast_and_channels_last_train_on_cpu(tmp_path):
    result = train(tiny_config(train__amp="bf16", train__channels_last=True), tmp_path, quiet=True)
    row = result.final
    assert torch.isfinite(torch.tensor([row["train_loss"], row["val_loss"]])).all()
    assert all(v.dtype == torch.float32 for v in result.model.state_dict().values() if v.is_floating_point())


def test_ema_weights_are_saved_evaluated_and_loadable(tmp_path):
    result = train(tiny_config(train__ema_decay=0.9), tmp_path, quiet=True)
    assert "ema_val_top1_err" in result.final
    ema, _ = load_weights(tmp_path / "model_ema.safetensors")
    plain, _ = load_weights(tmp_path / "model.safetensors")
    assert not weights_equal(ema, plain)
    assert evaluate_network(load_for_evaluation(tmp_path, ema=True), tiny_config().data.spec, workers=0)["images"] == 16


def test_gradient_accumulation_counts_steps_and_scales_the_rate(tmp_path):
    trainer = Trainer(tiny_config(train__accum_steps=2, train__batch_size=8, optim__lr=0.1, optim__lr_batch=32), tmp_path, quiet=True)
    result = trainer.fit()
    assert trainer.steps_per_epoch == 4 and result.final["step"] == 4 and result.final["train_images"] == 64
    assert trainer.base_lr == pytest.approx(0.1 * 16 / 32)  # linear scaling by the global batch 8 x 2


def test_label_smoothing_and_decay_groups_reach_the_optimiser(tmp_path):
    trainer = Trainer(tiny_config(optim__label_smoothing=0.1, optim__decay_norm_and_bias=False), tmp_path, quiet=True)
    trainer.setup()
    assert trainer.criterion.label_smoothing == 0.1
    decay, no_decay = trainer.optimizer.param_groups
    assert no_decay["weight_decay"] == 0.0 and all(p.ndim <= 1 for p in no_decay["params"])
    assert all(p.ndim > 1 for p in decay["params"])


def test_a_folder_with_bad_images_trains_when_asked_to_skip(tmp_path):
    root = make_tree(tmp_path / "data")
    (root / "train" / "cat" / "zz.jpg").write_bytes(b"garbage")
    config = tiny_config(data__spec=f"folder:{root}", train__batch_size=4, data__skip_bad_images=True,
                         data__train_transform="random_resized_crop")
    assert train(config, tmp_path / "run", quiet=True).final["bad_images"] == 1  # one epoch, one bad training image
    with pytest.raises(Exception, match=r"cannot read image .*zz\.jpg"):
        train(config.replace({"data.skip_bad_images": False, "train.seed": 1}), tmp_path / "strict", quiet=True)


def test_user_errors(tmp_path):
    train(tiny_config(), tmp_path, quiet=True)
    with pytest.raises(ConfigError, match="already holds a run; continue it with --resume"):
        train(tiny_config(), tmp_path, quiet=True)
    with pytest.raises(ConfigError, match="fp16 autocast is for GPUs"):
        train(tiny_config(train__amp="fp16", train__device="cpu"), tmp_path / "x", quiet=True)
    with pytest.raises(ConfigError, match="do not fill one step"):
        train(tiny_config(train__batch_size=128), tmp_path / "y", quiet=True)
    with pytest.raises(ConfigError, match="--num-classes 7 but"):
        train(tiny_config(model__kwargs__num_classes=7), tmp_path / "z", quiet=True)
    with pytest.raises(ConfigError, match="names no model"):
        train(tiny_config(model__name=None), tmp_path / "w", quiet=True)


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path):
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"pip install 'senet\[tensorboard\]'"):
            train(tiny_config(train__tensorboard=True), tmp_path, quiet=True)
    else:
        train(tiny_config(train__tensorboard=True), tmp_path, quiet=True)
        assert list((tmp_path / "tensorboard").iterdir())


@pytest.mark.gpu
def test_fp16_grad_scaler_and_channels_last_on_gpu(tmp_path):
    result = train(tiny_config(train__device="cuda", train__amp="fp16", train__channels_last=True, schedule__epochs=2),
                   tmp_path, quiet=True)
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in result.history)
    assert next(result.model.parameters()).is_cuda


@pytest.mark.slow
def test_compiled_training_matches_eager_closely(tmp_path):
    eager = train(tiny_config(), tmp_path / "eager", quiet=True).model.state_dict()
    lines: list[str] = []
    compiled = train(tiny_config(train__compile=True), tmp_path / "compiled", log=lines.append).model.state_dict()
    assert any(line.startswith("torch.compile: the first training step compiles") for line in lines)
    assert sum(line.startswith("torch.compile: the first step took") for line in lines) == 1
    for key in eager:
        if eager[key].is_floating_point():
            assert torch.allclose(eager[key], compiled[key], atol=1e-3, rtol=1e-3), key


def test_auxiliary_classifier_outputs_add_their_loss(tmp_path):
    trainer = Trainer(tiny_config(), tmp_path, quiet=True)
    trainer.setup()

    class WithAux(torch.nn.Module):  # what Inception-v3 with aux_logits returns in training mode
        def forward(self, x):
            return torch.zeros(len(x), 4), torch.ones(len(x), 4)

    trainer.train_model = WithAux()
    labels = torch.tensor([0, 1])
    logits, loss = trainer._forward(torch.zeros(2, 3, 8, 8), labels)
    plain = torch.nn.functional.cross_entropy(torch.zeros(2, 4), labels)
    assert logits.shape == (2, 4) and loss.item() == pytest.approx(1.4 * plain.item())
