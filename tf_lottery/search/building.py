"""Building the network of a search: a zoo model from the config, or a user's builder (given its seed).

Shared by `find_ticket` and by `export` (which rebuilds a run's network to restore it); a TypeError
raised inside a user's builder surfaces as it is, never as a silent retry without the seed.
"""

from __future__ import annotations

import inspect
from typing import Callable

import tf_lottery_models as zoo

from tf_lottery import keras3
from tf_lottery.config import ExperimentConfig


def call_builder(builder: Callable, seed: int):
    """`builder(seed=seed)` when it takes a `seed` argument, else `builder()`; a Keras 3 result is carried over."""
    if not callable(builder):
        raise ValueError(f"model must be a Keras model, a function building one, or None (a zoo name), "
                         f"not {type(builder).__name__}")
    try:
        takes_seed = "seed" in inspect.signature(builder).parameters
    except (TypeError, ValueError):  # a builtin or C callable: no inspectable parameters
        takes_seed = False
    built = builder(seed=seed) if takes_seed else builder()
    return keras3.to_tf_keras(built) if keras3.is_keras3_model(built) else built


def zoo_model(config: ExperimentConfig, input_shape, num_classes: int = 10):
    """The zoo model named by `config.model.model`, seeded with the run's seed."""
    build = zoo.get_builder(config.model.model)
    return build(tuple(input_shape), num_classes=num_classes, dropout_rate=config.model.dropout_rate,
                 seed=config.runtime.seed)
