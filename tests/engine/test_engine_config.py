"""Recipes, config overrides and validation, learning-rate schedules."""

import math

import pytest
import yaml

from senet.engine.config import RunConfig, ScheduleConfig
from senet.engine.recipes import list_recipes, load_recipe, resolve_config
from senet.engine.schedule import Plateau, lr_factor
from senet.engine.train import prepare_config
from senet.errors import ConfigError


def test_shipped_recipes_resolve_and_state_the_paper_settings():
    assert {"paper-imagenet", "paper-cifar", "paper-mobile", "demo"} <= set(list_recipes())
    imagenet = resolve_config("paper-imagenet")
    assert (imagenet.optim.lr, imagenet.optim.lr_batch, imagenet.optim.momentum) == (0.6, 1024, 0.9)
    assert (imagenet.schedule.name, imagenet.schedule.step_every, imagenet.schedule.epochs) == ("step", 30, 100)
    assert imagenet.data.scale == (0.08, 1.0) and imagenet.data.eval_crop_fraction == 224 / 256
    cifar = resolve_config("paper-cifar")
    assert (cifar.data.train_transform, cifar.data.pad, cifar.optim.lr, cifar.schedule.milestones) == ("pad_crop", 4, 0.1, (82, 123))
    mobile = resolve_config("paper-mobile")
    assert (mobile.schedule.name, mobile.train.batch_size, mobile.optim.lr) == ("plateau", 256, 0.1)
    assert resolve_config("demo").data.spec == "digits"


def test_overrides_reach_every_field_and_round_trip_through_yaml():
    config = resolve_config(
        "paper-imagenet",
        {"optim.lr": 0.1, "schedule.milestones": [30, 60], "model.kwargs.reduction": 8, "train.amp": "bf16"},
    )
    assert config.optim.lr == 0.1 and config.schedule.milestones == (30, 60)
    assert config.model.kwargs == {"reduction": 8} and config.train.amp == "bf16"
    again = RunConfig.from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict())))
    assert again == config


def test_user_recipe_files(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model: {name: se_resnet20}\noptim: {lr: 0.05, lr_batch: null}\n")
    config = resolve_config(str(path))
    assert (config.recipe, config.model.name, config.optim.lr, config.optim.lr_batch) == ("mine", "se_resnet20", 0.05, None)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"optim.lrr": 0.1}, r"unknown setting 'optim.lrr' \(did you mean 'lr'\?\)"),
        ({"optim.lr": "fast"}, "optim.lr takes a number"),
        ({"data.scale": [0.5]}, "data.scale takes 2 values"),
        ({"train.amp": "fp8"}, "unknown amp 'fp8'"),
        ({"train.batch_size": 0}, "train.batch_size must be >= 1"),
        ({"train.channels_last": "yes"}, "takes true or false"),
        ({"optim.label_smoothing": 1.5}, "label_smoothing"),
    ],
)
def test_bad_settings_are_one_line_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message) as error:
        resolve_config("paper-cifar", overrides)
    assert "\n" not in str(error.value)


def test_unknown_recipe_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'paper-cifar'"):
        load_recipe("paper-cifr")


def test_resume_reads_the_saved_config_and_reports_changes(tmp_path):
    saved = resolve_config("demo", {"schedule.epochs": 3})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved.to_dict()))
    same, changes = prepare_config("paper-imagenet", {"schedule.epochs": 3}, tmp_path)
    assert same == saved and changes == []
    longer, changes = prepare_config(None, {"schedule.epochs": 5}, tmp_path)
    assert longer.schedule.epochs == 5 and changes == ["schedule.epochs: 3 -> 5"]


def test_step_schedule_divides_by_ten_every_30_epochs():
    config = ScheduleConfig(name="step", epochs=100, step_every=30)
    assert [lr_factor(config, e) for e in (0, 29.99, 30, 60, 90, 99.5)] == pytest.approx([1, 1, 0.1, 0.01, 0.001, 0.001])
    milestones = ScheduleConfig(name="step", milestones=(82, 123))
    assert [lr_factor(milestones, e) for e in (81.9, 82, 123)] == pytest.approx([1, 0.1, 0.01])


def test_warmup_then_cosine():
    config = ScheduleConfig(name="cosine", epochs=10, warmup_epochs=2, warmup_start=0.1, min_lr_ratio=0.01)
    assert lr_factor(config, 0) == pytest.approx(0.1)
    assert lr_factor(config, 1) == pytest.approx(0.55)
    assert lr_factor(config, 2) == pytest.approx(1.0)
    assert lr_factor(config, 6) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(config, 10) == pytest.approx(0.01)
    factors = [lr_factor(config, e / 10) for e in range(20, 101)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))


def test_plateau_divides_after_patience_epochs_without_improvement():
    config = ScheduleConfig(name="plateau", patience=2, gamma=0.1)
    plateau = Plateau()
    for loss in (1.0, 0.9, 0.95, 0.91):
        plateau.update(config, loss)
    assert plateau.factor == pytest.approx(0.1) and lr_factor(config, 50, plateau.factor) == pytest.approx(0.1)
    restored = Plateau()
    restored.load_state_dict(plateau.state_dict())
    assert restored == plateau
    assert Plateau().best == math.inf
