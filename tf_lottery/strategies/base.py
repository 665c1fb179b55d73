"""What a pruning strategy is, and the one function that turns its scores into the next mask.

A strategy scores every weight (higher = kept first); `prune` keeps, of each layer (or of the
pooled layers, globally), the fraction that the pruning rates give at the level, never
reviving a weight the current mask has pruned. Everything here is NumPy: mask in, mask out.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Optional

import numpy as np

from tf_lottery.config import PruningConfig, layer_rate_overrides
from tf_lottery.masking import granularity as granular
from tf_lottery.masking import masks as mask_math

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
    units: Any = None  # the traced unit graph (`tf_lottery.masking.unit_graph.UnitMap`), for granularity='unit'


@dataclasses.dataclass(frozen=True)
class Strategy:
    """A registered pruning strategy.

    `scores(inputs) -> {layer: array}` ranks weights (higher = keep). `at_init` strategies score
    theta_0 rather than trained weights, so each level is pruned afresh from the dense mask.
    `signed` ranks by the score itself rather than its magnitude. `needs_data`: its scores read a few
    training batches (drawn as `score_batches` says; `config.DATA_FREE_STRATEGIES` lists the rest).
    `select`, when given, replaces the standard selection (SynFlow re-scores while it prunes). `structured`: its scores are
    magnitudes that add up over a unit, block or 2:4 group, so every granularity can use them.
    """

    name: str
    description: str
    scores: Callable[[PruneInputs], Masks]
    at_init: bool = False
    signed: bool = False
    needs_model: bool = False
    needs_data: bool = False
    select: Optional[Callable[..., Masks]] = None
    structured: bool = False


def layer_rates(config: PruningConfig, kinds: Mapping[str, str]) -> dict[str, float]:
    """Each layer's rate a round: its kind's (fc_rate, conv_rate), the output layer's (output_rate,
    or half its kind's), and `layer_rates` over them. A name that is no prunable layer of this model,
    or a pruned output layer at granularity='unit', is one line."""
    rates = {name: config.fc_rate if kind == "fc" else config.conv_rate for name, kind in kinds.items()}
    out = list(kinds)[-1]
    rates[out] = config.output_rate if config.output_rate is not None else rates[out] / 2.0
    overrides = layer_rate_overrides(config)
    unknown = [name for name in overrides if name not in kinds]
    if unknown:
        raise ValueError(f"layer_rates names {', '.join(map(repr, unknown))}, not a prunable layer of this model; "
                         f"allowed: {', '.join(kinds)}")
    if config.granularity == "unit" and overrides.get(out, 0.0) != 0.0:
        raise ValueError(f"layer_rates {out}={overrides[out]!r} with granularity='unit': the output layer keeps all "
                         "its units (one per class); allowed: leave it out, or 0")
    rates.update(overrides)
    return rates


def check_tied_rates(config: PruningConfig, kinds: Mapping[str, str], units: Any) -> None:
    """Refuse `layer_rates` that give layers whose units are tied (e.g. by a residual add) different
    rates: such a group is pruned as one, at one rate."""
    if units is None or not config.layer_rates:
        return
    rates = layer_rates(config, kinds)
    for group in units.groups:
        given = {name: rates[name] for name in group.producers if name in rates}
        if len(set(given.values())) > 1:
            spelled = ", ".join(f"{n}={r!r}" for n, r in given.items())
            raise ValueError(f"layer_rates gives {spelled}, whose units are tied (pruned together, e.g. by a residual "
                             "add): give them one rate")


def rate_field(config: PruningConfig, kinds: Mapping[str, str], layer: str) -> str:
    """The setting that gives `layer` its rate, for messages."""
    if layer in layer_rate_overrides(config):
        return f"layer_rates {layer}"
    if layer == list(kinds)[-1]:
        return "output_rate" if config.output_rate is not None else "the output layer's rate"
    return "fc_rate" if kinds[layer] == "fc" else "conv_rate"


def keep_fractions(config: PruningConfig, kinds: Mapping[str, str], level: int) -> dict[str, float]:
    """Fraction of each layer's weights kept at `level`: (1 - its rate) ** level (`layer_rates`)."""
    return {name: kept_fraction(rate, level) for name, rate in layer_rates(config, kinds).items()}


def kept_fraction(rate: float, level: int) -> float:
    """(1 - rate) ** level, never 0: at levels so deep that it underflows, a layer keeps its floor of one weight."""
    return max((1.0 - rate) ** level, math.ulp(0.0))


def pooled_rate(config: PruningConfig, kinds: Mapping[str, str]) -> float:
    """The rate of the global pool: conv's if any layer but the output is a conv (under `global_all` too)."""
    pooled = list(kinds)[:-1]
    return config.conv_rate if any(kinds[n] == "conv" for n in pooled) else config.fc_rate


def select(config: PruningConfig, scores: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray],
           kinds: Mapping[str, str], level: int, signed: bool = False, units: Any = None,
           invert: bool = False) -> Masks:
    """The masks of `level` from `scores`: layerwise, or over the pool of `pool_layers` (the output
    layer at its own rate when outside it); by units, blocks or 2:4 groups at those granularities (`tf_lottery.masking.granularity`).

    `invert` keeps the lowest-ranked survivors instead, with the same counts: the score-inversion
    sanity check of Frankle, Dziugaite, Roy & Carbin (ICLR 2021).
    """
    keep = keep_fractions(config, kinds, level)
    ranked = scores if signed else {n: np.abs(s) for n, s in scores.items()}
    if invert:
        if config.granularity != "weight":
            raise ValueError(f"the inverted control needs granularity=weight, not {config.granularity!r}")
        ranked, signed = {n: -np.asarray(s, np.float64) for n, s in ranked.items()}, True
    if config.granularity != "weight":
        return granular.select(config.granularity, ranked, masks, keep, kinds, units)
    if config.pruning_scope == "layerwise":
        return mask_math.layerwise_masks(ranked, masks, keep, signed=signed)
    out = list(kinds)[-1]
    pool = pool_layers(config, kinds)
    pooled = {n: m for n, m in masks.items() if n in pool}
    result = mask_math.global_masks(ranked, pooled, kept_fraction(pooled_rate(config, kinds), level), signed=signed)
    if out not in pool:
        result[out] = mask_math.magnitude_mask(ranked[out], masks[out], keep[out], signed=signed)
    return {n: result[n] for n in masks}


def pool_layers(config: PruningConfig, kinds: Mapping[str, str]) -> list[str]:
    """The layers ranked together: all but the output under `global` (the paper's VGG/Resnet mode, the
    output at its own rate), every layer under `global_all` (the pruning-at-initialization papers)."""
    names = list(kinds)
    if config.pruning_scope == "layerwise":
        return []
    return names if config.pruning_scope == "global_all" else names[:-1]


def expected_counts(config: PruningConfig, kinds: Mapping[str, str], sizes: Mapping[str, int], level: int) -> dict:
    """Survivors a mask of `level` must have: per layer when layerwise, else the pool's range and each layer outside it."""
    keep = keep_fractions(config, kinds, level)
    counts = {n: mask_math.keep_count(sizes[n], keep[n]) for n in kinds}
    if config.pruning_scope == "layerwise":
        return {"layers": counts}
    pool = pool_layers(config, kinds)
    total = mask_math.keep_count(sum(sizes[n] for n in pool), kept_fraction(pooled_rate(config, kinds), level))
    alone = {n: counts[n] for n in kinds if n not in pool}
    return {"layers": alone, "pool": pool, "pool_range": (total, total + len(pool))}


@dataclasses.dataclass(frozen=True)
class Emptied:
    """The first level at which the rates round a layer (or the global pool) to no weight at all."""

    level: int
    what: str  # "layer 'dense'" or "the global pool (layers ...)"
    size: int
    rate_name: str  # the field whose rate empties it, e.g. "fc_rate=0.2"
    keep: float  # (1 - rate) ** level
    counted: str = "weights"  # what the rates count: weights, units or blocks

    def message(self, rounds: Optional[int] = None) -> str:
        """The one-line refusal of a search of `rounds` rounds (None: of the next round) that reaches this level."""
        allowed = f"rounds <= {self.level}" if rounds is not None else f"at most {self.level - 1} rounds of pruning"
        word = self.counted.split(" ")[0]
        one = word[:-1]
        return (f"{f'rounds={rounds}: ' if rounds is not None else ''}round {self.level} would leave {self.what} none "
                f"of its {self.size:,} {word} ({self.rate_name} keeps {self.keep:.3g} of them, under half a {one}), "
                f"disconnecting the network; allowed: {allowed}, or keep_one_weight=True to keep each layer's "
                f"largest {one}")


def _raw_counts(config: PruningConfig, kinds: Mapping[str, str], sizes: Mapping[str, int], level: int) -> dict:
    """Survivors at `level` before any floor: what the rates alone give, per layer and for the pool."""
    keep = keep_fractions(config, kinds, level)
    counts = {f"layer {n!r}": int(round(sizes[n] * keep[n])) for n in kinds}
    if config.pruning_scope != "layerwise":
        pool = pool_layers(config, kinds)
        counts = {f"layer {n!r}": counts[f"layer {n!r}"] for n in kinds if n not in pool}
        if pool:
            fraction = kept_fraction(pooled_rate(config, kinds), level)
            counts[f"the global pool ({', '.join(pool)})"] = int(round(sum(sizes[n] for n in pool) * fraction))
    return counts


def granular_counts(config: PruningConfig, kinds: Mapping[str, str], shapes: Mapping[str, tuple], level: int,
                    units: Any = None, raw: bool = False) -> dict:
    """What a mask of `level` keeps at a structured granularity: units per group, blocks or weights per layer
    (`raw`: by the rates alone, before the floor of one, keyed "layer 'name'")."""
    keep = keep_fractions(config, kinds, level)
    if config.granularity == "unit":
        return granular.unit_raw_counts(keep, units) if raw else granular.unit_counts(keep, units)
    if config.granularity == "block":
        return granular.block_raw_counts(keep, kinds, shapes) if raw else granular.block_counts(keep, kinds, shapes)
    # 2:4 is reached at level 1 and never changes after it.
    return {"level": min(level, 1)} if not raw else {"2:4": 1}


def counted(config: PruningConfig) -> str:
    """What the rates count at this granularity, for messages."""
    return {"unit": "units", "block": "blocks (weights outside Dense layers)"}.get(config.granularity, "weights")


def first_emptied(config: PruningConfig, kinds: Mapping[str, str], sizes: Mapping[str, int],
                  rounds: int, shapes: Optional[Mapping[str, tuple]] = None, units: Any = None) -> Optional[Emptied]:
    """The first level below `rounds` whose rates leave a layer (or the pool) no weight, or None.

    Survivors shrink with the level, so the first level found by bisection is the first of all.
    At structured granularities (`shapes` and, for units, `units` given) it counts units or blocks.
    """
    if not kinds or rounds < 2:
        return None
    structured = config.granularity != "weight"

    def raw_counts(level: int) -> dict:
        if structured:
            return granular_counts(config, kinds, shapes, level, units, raw=True)
        return _raw_counts(config, kinds, sizes, level)

    def empty(level: int) -> bool:
        return min(raw_counts(level).values()) < 1

    if not empty(rounds - 1):
        return None
    low, high = 0, rounds - 1  # empty(high), not empty(low)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if not empty(middle) else (low, middle)
    counts = raw_counts(high)
    what = next(name for name, count in counts.items() if count < 1)
    out = list(kinds)[-1]
    if structured:
        layer = what[len("layer "):].strip("'\"")
        size = granular_counts(config, kinds, shapes, 0, units)[layer]
        rate = 1.0 - keep_fractions(config, kinds, 1)[layer]
        rate_name = rate_field(config, kinds, layer)
        return Emptied(high, what, size, f"{rate_name}={rate:g}", (1.0 - rate) ** high, counted(config))
    if what.startswith("the global pool"):
        size = sum(sizes[n] for n in kinds if n != out)
        rate_name = "conv_rate" if any(kinds[n] == "conv" for n in kinds if n != out) else "fc_rate"
        rate = pooled_rate(config, kinds)
    else:
        layer = what[len("layer "):].strip("'\"")
        size = sizes[layer]
        keep = keep_fractions(config, kinds, 1)[layer]
        rate = 1.0 - keep
        rate_name = rate_field(config, kinds, layer)
    return Emptied(high, what, size, f"{rate_name}={rate:g}", (1.0 - rate) ** high)


def last_changing_level(config: PruningConfig, kinds: Mapping[str, str], sizes: Mapping[str, int],
                        rounds: int, shapes: Optional[Mapping[str, tuple]] = None, units: Any = None) -> int:
    """The last level below `rounds` whose survivors differ from the level before it (0: none does).

    Levels after it would train the same counts of weights again (the rates round to nothing more,
    or every layer sits at its floor of one weight): a search stops there. Survivors never grow
    with the level, so a level equal to the last one has every level between them equal too.
    """
    if rounds < 2 or not kinds:
        return 0

    def counts(level: int):
        if config.granularity != "weight":
            return granular_counts(config, kinds, shapes, level, units)
        return expected_counts(config, kinds, sizes, level)

    final = counts(rounds - 1)
    if final != counts(rounds - 2):
        return rounds - 1
    low, high = 0, rounds - 1  # counts(high) == final; counts(low) != final unless low == 0
    if counts(0) == final:
        return 0
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if counts(middle) != final else (low, middle)
    return high
