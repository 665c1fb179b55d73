"""Pruning strategies, registered by name: how the next mask is chosen.

Adding one is a new module defining `STRATEGY = Strategy(...)` plus one line in `_MODULES`.
"""

from __future__ import annotations

import importlib

from tf_lottery.strategies.base import (
    Emptied, PruneInputs, Strategy, counted, expected_counts, first_emptied, granular_counts, keep_fractions,
    kept_fraction, last_changing_level, pooled_rate, select,
)

_MODULES = {
    "magnitude": "tf_lottery.strategies.magnitude",
    "random": "tf_lottery.strategies.random",
    "magnitude_init": "tf_lottery.strategies.magnitude_init",
    "snip": "tf_lottery.strategies.snip",
    "grasp": "tf_lottery.strategies.grasp",
    "synflow": "tf_lottery.strategies.synflow",
}


def names() -> list[str]:
    return list(_MODULES)


def get(name: str) -> Strategy:
    """The strategy registered under `name`; one-line ValueError listing the known ones if none."""
    if name not in _MODULES:
        raise ValueError(f"unknown pruning_strategy {name!r}; allowed: {', '.join(_MODULES)}")
    return importlib.import_module(_MODULES[name]).STRATEGY


def prune(config, inputs: PruneInputs):
    """The masks of `inputs.level` under `config.pruning_strategy`: a pure function of the inputs."""
    strategy = get(config.pruning_strategy)
    if strategy.select is not None:
        return strategy.select(config, inputs)
    return select(config, strategy.scores(inputs), inputs.masks, inputs.kinds, inputs.level, strategy.signed,
                  inputs.units)


def check_granularity(config) -> None:
    """Refuse a strategy whose scores cannot rank units, blocks or 2:4 groups, in one line."""
    if config.granularity == "weight":
        return
    strategy = get(config.pruning_strategy)
    if not strategy.structured:
        allowed = ", ".join(n for n in names() if get(n).structured)
        raise ValueError(f"pruning_strategy={config.pruning_strategy!r} cannot score granularity="
                         f"{config.granularity!r} (its scores rank single weights); allowed with it: {allowed}")


__all__ = [
    "Emptied", "PruneInputs", "Strategy", "check_granularity", "counted", "expected_counts", "granular_counts", "first_emptied", "get", "keep_fractions",
    "last_changing_level", "names", "prune", "select",
]
