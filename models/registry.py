"""Model builders registered by name, each with the paper's hyperparameters as a preset.

A preset is a set of flat config fields (`tf_lottery.config` names: `learning_rate`,
`fc_rate`, ...) that override the defaults of `ExperimentConfig`; `from_preset` (also
`tf_lottery.from_preset`) applies it. Registering checks it by building the config, so a typo
fails at import, not mid-run. The zoo imports the config, never the other way round.
"""

from collections.abc import Callable
from types import MappingProxyType
from typing import Any, Mapping

import tf_keras as keras

from tf_lottery import config as config_lib

# build(input_shape, num_classes=10, dropout_rate=0.0, seed=None) -> keras.Model
Builder = Callable[..., keras.Model]

_BUILDERS: dict[str, Builder] = {}
_PRESETS: dict[str, Mapping[str, Any]] = {}


def register(name: str, preset: Mapping[str, Any]) -> Callable[[Builder], Builder]:
    """Decorator: register a builder under `name` with its paper preset (flat config fields)."""
    config_lib.override(config_lib.ExperimentConfig(), **preset)  # a bad field or value fails here

    def decorate(builder: Builder) -> Builder:
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is already registered")
        _BUILDERS[name] = builder
        _PRESETS[name] = MappingProxyType(dict(preset))
        return builder

    return decorate


def _known(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(names())}")


def get_builder(name: str) -> Builder:
    """The builder registered under `name`; ValueError listing known names if none."""
    _known(name)
    return _BUILDERS[name]


def get_preset(name: str) -> Mapping[str, Any]:
    """The paper's config fields for `name`; ValueError listing known names if none."""
    _known(name)
    return _PRESETS[name]


def from_preset(model: str, preset: str = "paper", dataset: str = "fashion_mnist"):
    """The paper's hyperparameters for a zoo model ('paper'), or the same with 4 epochs a round ('fast').

    Returns:
        An `ExperimentConfig`; ValueError in one line for an unknown model or preset.
    """
    return config_lib.preset_config(model, get_preset(model), preset, dataset)


def names() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_BUILDERS)


def layer_seed(seed: int | None, index: int) -> int | None:
    """The seed of a model's `index`-th random layer, derived from the model seed."""
    return None if seed is None else seed * 1000 + index


def glorot_normal(seed: int | None, index: int) -> keras.initializers.Initializer:
    """Gaussian Glorot (the paper's init) for the `index`-th layer; seed None is unseeded."""
    return keras.initializers.GlorotNormal(seed=layer_seed(seed, index))
