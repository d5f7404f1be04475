"""Data without torchvision: datasets (digits, synthetic, folder, CIFAR), transforms, samplers, loaders."""

from senet.data.config import ImageTransform, create_transform, resolve_data_config, resolve_model_data_config
from senet.data.datasets import AugmentedDataset, ArraySet, FolderSet, ImageSet, SyntheticSet
from senet.data.images import BadImage, BadImageError, crop_resize, to_mode
from senet.data.loader import Batch, EvalSampler, Normalize, TrainSampler, collate, make_loader
from senet.data.spec import DataSpec, Splits, open_data, parse_data_spec
from senet.data.transforms import EvalTransform, TrainTransform

__all__ = [
    "ArraySet",
    "AugmentedDataset",
    "BadImage",
    "BadImageError",
    "Batch",
    "DataSpec",
    "EvalSampler",
    "EvalTransform",
    "FolderSet",
    "ImageSet",
    "ImageTransform",
    "Normalize",
    "Splits",
    "SyntheticSet",
    "TrainSampler",
    "TrainTransform",
    "collate",
    "create_transform",
    "crop_resize",
    "make_loader",
    "open_data",
    "parse_data_spec",
    "resolve_data_config",
    "resolve_model_data_config",
    "to_mode",
]
