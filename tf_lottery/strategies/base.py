"""What a pruning strategy is, and the one function that turns its scores into the next mask.

A strategy scores every weight (higher = kept first); `prune` keeps, of each layer (or of the
pooled layers, globally), the fraction that the pruning rates give at the level, never
reviving a weight the current mask has pruned. Everything here is NumPy: mask in, mask out.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import numpy as np

from tf_lottery import masks as mask_math
from tf_lottery.config import PruningConfig

Masks = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class PruneInputs:
    """What a strategy may look at when it scores the weights for `level`.

    `kinds` maps each masked weight to 'fc' or 'conv' in model order (the last is the output
    layer); `kernels` are the weights to score: the previous round's trained kernels for
    magnitude pruning, the dense run's for one-shot, theta_0 for pruning at initialization.
    Strategies that need the network or data (SNIP, GraSP, SynFlow) get `model` (wrapped, holding
    `kernels` and `masks`), `batches` (a few training batches) and `loss`.
    """

    kinds: Mapping[str, str]
    kernels: Mapping[str, np.ndarray]
    masks: Mapping[str, np.ndarray]
    level: int
    seed: int
    model: Any = None
    batches: Any = None
    loss: Any = None


@dataclasses.dataclass(frozen=True)
class Strategy:
    """A registered pruning strategy.

    `scores(inputs) -> {layer: array}` ranks weights (higher = keep). `at_init` strategies score
    theta_0 rather than trained weights, so each level is pruned afresh from the dense mask.
    `signed` ranks by the score itself rather than its magnitude. `select`, when given, replaces
    the standard selection (SynFlow re-scores while it prunes).
    """

    name: str
    description: str
    scores: Callable[[PruneInputs], Masks]
    at_init: bool = False
    signed: bool = False
    needs_model: bool = False
    select: Optional[Callable[..., Masks]] = None


def keep_fractions(config: PruningConfig, kinds: Mapping[str, str], level: int) -> dict[str, float]:
    """Fraction of each layer's weights kept at `level`: (1 - rate) ** level, by kind; output at half rate."""
    rates = {name: config.fc_rate if kind == "fc" else config.conv_rate for name, kind in kinds.items()}
    out = list(kinds)[-1]
    rates[out] = config.output_rate if config.output_rate is not None else rates[out] / 2.0
    return {name: (1.0 - rate) ** level for name, rate in rates.items()}


def pooled_rate(config: PruningConfig, kinds: Mapping[str, str]) -> float:
    """Global pruning pools every layer but the output at one rate: conv's if any layer is a conv."""
    pooled = list(kinds)[:-1]
    return config.conv_rate if any(kinds[n] == "conv" for n in pooled) else config.fc_rate


def select(config: PruningConfig, scores: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray],
           kinds: Mapping[str, str], level: int, signed: bool = False) -> Masks:
    """The masks of `level` from `scores`: layerwise, or global over all layers but the output."""
    keep = keep_fractions(config, kinds, level)
    ranked = scores if signed else {n: np.abs(s) for n, s in scores.items()}
    if config.pruning_scope == "layerwise":
        return mask_math.layerwise_masks(ranked, masks, keep, signed=signed)
    out = list(kinds)[-1]
    pooled = {n: m for n, m in masks.items() if n != out}
    result = mask_math.global_masks(ranked, pooled, (1.0 - pooled_rate(config, kinds)) ** level, signed=signed)
    result[out] = mask_math.magnitude_mask(ranked[out], masks[out], keep[out], signed=signed)
    return {n: result[n] for n in masks}


def expected_counts(config: PruningConfig, kinds: Mapping[str, str], sizes: Mapping[str, int], level: int) -> dict:
    """Survivors a mask of `level` must have: per layer when layerwise, else the output layer's and the pool's range."""
    keep = keep_fractions(config, kinds, level)
    counts = {n: mask_math.keep_count(sizes[n], keep[n]) for n in kinds}
    if config.pruning_scope == "layerwise":
        return {"layers": counts}
    out = list(kinds)[-1]
    pool = [n for n in kinds if n != out]
    total = mask_math.keep_count(sum(sizes[n] for n in pool), (1.0 - pooled_rate(config, kinds)) ** level)
    return {"layers": {out: counts[out]}, "pool": pool, "pool_range": (total, total + len(pool))}
