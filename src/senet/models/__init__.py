"""The model zoo. Importing this package registers every model family."""

from senet.models import (  # noqa: F401  (registration)
    cifar,
    inception,
    inception_resnet,
    mobilenet,
    resnet,
    resnet_nd,
    shufflenet,
    vgg,
)
from senet.models.base import ImageClassifier
from senet.models.registry import (
    create_model,
    is_se_model,
    list_models,
    model_entrypoint,
    model_family,
    plain_twin,
    register_model,
    se_twin,
)

__all__ = [
    "ImageClassifier",
    "create_model",
    "is_se_model",
    "list_models",
    "model_entrypoint",
    "model_family",
    "plain_twin",
    "register_model",
    "se_twin",
]
