"""Training and evaluation: configs and recipes, the train loop, torchrun/DDP, the demo (weights files: senet.weights)."""

from senet.engine.config import DataConfig, ModelConfig, OptimConfig, RunConfig, ScheduleConfig, TrainConfig
from senet.engine.evaluate import EvalResult, evaluate, evaluate_network
from senet.engine.recipes import list_recipes, load_recipe, resolve_config
from senet.engine.train import Trainer, TrainingDiverged, TrainResult, prepare_config, train

__all__ = [
    "DataConfig",
    "EvalResult",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "ScheduleConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "evaluate",
    "evaluate_network",
    "list_recipes",
    "load_recipe",
    "prepare_config",
    "resolve_config",
    "train",
]
