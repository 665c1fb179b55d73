"""Pruning strategies, registered by name: how the next mask is chosen.

Adding one is a new module defining `STRATEGY = Strategy(...)` plus one line in `_MODULES`.
"""

from __future__ import annotations

import importlib

from tf_lottery.strategies.base import (
    Emptied, PruneInputs, Strategy, check_tied_rates, counted, expected_counts, first_emptied, granular_counts,
    keep_fractions, kept_fraction, last_changing_level, layer_rates, pool_layers, pooled_rate, select,
)

_MODULES = {
    "magnitude": "tf_lottery.strategies.magnitude",
    "random": "tf_lottery.strategies.random",
    "magnitude_init": "tf_lottery.strategies.magnitude_init",
    "snip": "tf_lottery.strategies.snip",
    "grasp": "tf_lottery.strategies.grasp",
    "grasp_magnitude": "tf_lottery.strategies.grasp_magnitude",
    "synflow": "tf_lottery.strategies.synflow",
}


def names() -> list[str]:
    return list(_MODULES)


def get(name: str) -> Strategy:
    """The strategy registered under `name`; one-line ValueError listing the known ones if none."""
    if name not in _MODULES:
        raise ValueError(f"unknown pruning_strategy {name!r}; allowed: {', '.join(_MODULES)}")
    return importlib.import_module(_MODULES[name]).STRATEGY


def prune(config, inputs: PruneInputs, invert: bool = False):
    """The masks of `inputs.level` under `config.pruning_strategy`: a pure function of the inputs.

    `invert` keeps the lowest-scoring survivors with the same counts (the score-inversion control).
    """
    strategy = get(config.pruning_strategy)
    if strategy.select is not None:
        return strategy.select(config, inputs, invert=invert)
    return select(config, strategy.scores(inputs), inputs.masks, inputs.kinds, inputs.level, strategy.signed,
                  inputs.units, invert=invert)


def scope_warning(config) -> str | None:
    """One line when an at-initialization strategy does not rank every layer together, as its paper does.

    The default scope stays `layerwise` for every strategy (a run's scope is part of its results);
    the line says what that costs and how to get the papers' protocol.
    """
    strategy = get(config.pruning_strategy)
    if not strategy.at_init or config.pruning_scope == "global_all":
        return None
    if config.pruning_scope == "layerwise":
        cost = ("keeps IMP's per-layer counts, so only positions within a layer come from its scores "
                "(random_prune is then the same network for every strategy)")
    else:
        cost = "keeps the output layer out of the pool at its own rate"
    return (f"warning: pruning_strategy={config.pruning_strategy} with pruning_scope={config.pruning_scope} {cost}; "
            "its paper ranks every layer together: pruning_scope=global_all")


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
    "Emptied", "PruneInputs", "Strategy", "check_granularity", "counted", "expected_counts", "granular_counts", "first_emptied", "get", "keep_fractions", "layer_rates", "check_tied_rates",
    "last_changing_level", "names", "pool_layers", "prune", "scope_warning", "select",
]
