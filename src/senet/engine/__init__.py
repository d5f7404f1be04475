"""Training and evaluation: configs and recipes, the train loop, checkpoints, torchrun/DDP, the demo."""

from senet.engine.checkpoint import CheckpointError, load_checkpoint, load_weights, save_weights
from senet.engine.config import DataConfig, ModelConfig, OptimConfig, RunConfig, ScheduleConfig, TrainConfig
from senet.engine.evaluate import EvalResult, evaluate, evaluate_checkpoint
from senet.engine.recipes import list_recipes, load_recipe, resolve_config
from senet.engine.train import Trainer, TrainingDiverged, TrainResult, prepare_config, train

__all__ = [
    "CheckpointError",
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
    "evaluate_checkpoint",
    "list_recipes",
    "load_checkpoint",
    "load_recipe",
    "load_weights",
    "prepare_config",
    "resolve_config",
    "save_weights",
    "train",
]
