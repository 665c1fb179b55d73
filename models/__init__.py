"""tf_lottery model zoo (installed as tf_lottery_models): the paper's networks, registered by name."""

# Importing the model modules registers their builders.
from tf_lottery_models import conv, lenet, resnet, vgg  # noqa: F401
from tf_lottery_models.registry import from_preset, get_builder, get_preset, names, register

__all__ = ["from_preset", "get_builder", "get_preset", "names", "register"]
