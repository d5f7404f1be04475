"""Recipes: YAML files of RunConfig settings shipped in `senet/recipes/` (or any YAML file a user names).

A run's configuration is the recipe with the command line's settings on top; `senet train` saves the
result as `config.yaml` in its output folder.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from senet.engine.config import RunConfig, apply_overrides
from senet.errors import ConfigError, did_you_mean
from senet.options import list_recipes


def recipe_text(name: str) -> str:
    """The YAML text of a shipped recipe, or of the file at path `name`."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
        return path.read_text()
    names = list_recipes()
    if name not in names:
        raise ConfigError(f"unknown recipe {name!r}{did_you_mean(name, names)}; choose one of: {', '.join(names)} (or a YAML file)")
    return (resources.files("senet") / "recipes" / f"{name}.yaml").read_text()


def load_recipe(name: str) -> dict[str, Any]:
    """The settings of recipe `name` as a nested dict."""
    try:
        data = yaml.safe_load(recipe_text(name)) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"recipe {name} is not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {name} must be a mapping of sections (model, data, optim, schedule, train)")
    return data


def resolve_config(
    recipe: str, overrides: dict[str, Any] | None = None, *, notes: list[str] | None = None
) -> RunConfig:
    """RunConfig of `recipe` with dotted-key `overrides` applied ({"optim.lr": 0.1, ...}).

    An overridden `schedule.epochs` stretches the recipe's schedule with it (`fit_to_epochs`: milestones
    scale, the warm-up is capped) unless the overrides set those too; the line saying so goes to `notes`.
    """
    from senet.engine.schedule import fit_to_epochs

    overrides = overrides or {}
    data = {"recipe": Path(recipe).stem if recipe.endswith((".yaml", ".yml")) else recipe, **load_recipe(recipe)}
    config = RunConfig.from_dict(apply_overrides(data, overrides))
    if "schedule.epochs" in overrides:
        recipe_schedule = RunConfig.from_dict(apply_overrides(data, {k: v for k, v in overrides.items() if k != "schedule.epochs"})).schedule
        user_set = {key.split(".", 1)[1] for key in overrides if key.startswith("schedule.")}
        schedule, note = fit_to_epochs(recipe_schedule, config.schedule.epochs, user_set=user_set)
        config = dataclasses.replace(config, schedule=schedule)
        if note and notes is not None:
            notes.append(note)
    return config
