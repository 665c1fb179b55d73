"""What one pruning decision removes, as pure mask math: NumPy in, NumPy out, no Keras.

- `weight`: single weights (the paper; `tf_lottery.masking.masks`).
- `unit`: whole output units of Dense layers and filters of convolutions, ranked within their
  layer by the L2 norm of the unit's surviving scores (weights, for magnitude pruning); the rates
  are fractions of units. A pruned unit's outgoing rows (Dense) or input channels (convolution)
  in every layer it feeds are masked too, so it carries no signal; units tied by an Add are one
  group, pruned together (`tf_lottery.masking.unit_graph`). The output layer keeps all its units.
- `block`: blocks of 1x4 consecutive weights of a Dense kernel along its input dimension (the
  pattern of TFLite's sparse fully-connected kernel), ranked by their L2 norm; the rates are
  fractions of blocks. Other layers are pruned by weight.
- `m_by_n`: of every 4 consecutive weights along the input dimension (a Dense kernel's rows, a
  convolution's input channels), the 2 largest survive (TF-MOT's `sparsity_m_by_n`, 2:4). The
  pattern is the level-1 mask; later levels prune nothing. A layer whose input dimension is not a
  multiple of 4, or whose rate is 0, stays dense.

Every function keeps pruning monotone: what the current mask pruned scores lowest.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping, Optional

import numpy as np

from tf_lottery.masking import masks as mask_math

if TYPE_CHECKING:  # the traced graph; its module imports Keras, this one does not
    from tf_lottery.masking.unit_graph import UnitMap

Masks = dict[str, np.ndarray]
BLOCK = 4  # 1x4 blocks: TFLite's optimized sparse fully-connected kernel
M, N = 4, 2  # 2:4, keep N of every M


def _ranked_keep(keys: np.ndarray, keep: int) -> np.ndarray:
    """0/1 of the `keep` highest keys; ties go to the lower index being pruned first (a stable sort)."""
    order = np.argsort(keys, kind="stable")
    kept = np.zeros(keys.size, np.float32)
    if keep > 0:
        kept[order[keys.size - keep:]] = 1.0
    return kept


# -- unit ---------------------------------------------------------------------------------------
def unit_columns(kernel: np.ndarray) -> np.ndarray:
    """The kernel as (everything else, units): a unit is the last axis of Dense and convolution kernels."""
    return np.asarray(kernel).reshape(-1, np.shape(kernel)[-1])


def alive_units(masks: Mapping[str, np.ndarray], units: "UnitMap") -> list[np.ndarray]:
    """Per unit group: 1 for a unit with any surviving weight in any of its layers."""
    out = []
    for group in units.groups:
        alive = np.zeros(group.size, bool)
        for producer in group.producers:
            alive |= np.any(unit_columns(masks[producer]) > 0, axis=0)
        out.append(alive.astype(np.float32))
    return out


def unit_scores(scores: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], units: "UnitMap") -> list[np.ndarray]:
    """Per unit group: the L2 norm of each unit's surviving scores, over every layer of the group."""
    out = []
    for group in units.groups:
        total = np.zeros(group.size, np.float64)
        for producer in group.producers:
            masked = unit_columns(scores[producer]).astype(np.float64) * unit_columns(masks[producer])
            total += np.sum(masked ** 2, axis=0)
        out.append(np.sqrt(total))
    return out


def masks_of_units(alive: list[np.ndarray], shapes: Mapping[str, tuple], units: "UnitMap") -> Masks:
    """Each layer's mask from its group's kept units (columns) and the kept units feeding it (rows)."""
    result = {}
    for name, shape in shapes.items():
        columns = alive[units.group_of[name]]
        rows_from = units.kernel_rows(name)
        rows = np.ones(len(rows_from), np.float32)
        fed = rows_from.group >= 0
        for i in np.flatnonzero(fed):
            rows[i] = alive[rows_from.group[i]][rows_from.unit[i]]
        if len(rows) != shape[-2]:
            raise ValueError(f"layer {name!r}: the traced graph gives {len(rows)} input channels, its kernel {shape[-2]}")
        result[name] = (np.ones(shape, np.float32) * rows[:, None] * columns[None, :]).astype(np.float32)
    return result


def unit_masks(scores: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], keep: Mapping[str, float],
               units: "UnitMap") -> Masks:
    """Keep, of each unit group, the fraction `keep` of its first layer gives, by unit norm; mask their consumers."""
    current = alive_units(masks, units)
    norms = unit_scores(scores, masks, units)
    alive = []
    for group, now, norm in zip(units.groups, current, norms):
        if group.fixed:
            alive.append(np.ones(group.size, np.float32))
            continue
        count = mask_math.keep_count(group.size, keep[group.producers[0]])
        count = min(count, int(np.count_nonzero(now)) or 1)
        alive.append(_ranked_keep(np.where(now > 0, norm, -1.0), count))
    return masks_of_units(alive, {n: np.shape(m) for n, m in masks.items()}, units)


def unit_counts(keep: Mapping[str, float], units: "UnitMap") -> dict[str, int]:
    """Units each prunable group keeps (named by its first layer)."""
    return {g.producers[0]: mask_math.keep_count(g.size, keep[g.producers[0]]) for g in units.groups if not g.fixed}


def unit_raw_counts(keep: Mapping[str, float], units: "UnitMap") -> dict[str, int]:
    """Units each prunable group would keep by the rates alone (before the floor of one)."""
    return {f"layer {g.producers[0]!r}": int(round(g.size * keep[g.producers[0]])) for g in units.groups if not g.fixed}


# -- block --------------------------------------------------------------------------------------
def _blocks(array: np.ndarray) -> np.ndarray:
    """A Dense kernel (in, out) as (ceil(in / 4), 4, out), zero-padded: blocks along the input dimension."""
    rows, cols = np.shape(array)
    padded = np.zeros((math.ceil(rows / BLOCK) * BLOCK, cols), np.float64)
    padded[:rows] = array
    return padded.reshape(-1, BLOCK, cols)


def block_count(shape: tuple) -> int:
    return math.ceil(shape[0] / BLOCK) * shape[1]


def block_mask(scores: np.ndarray, mask: np.ndarray, keep_fraction: float) -> np.ndarray:
    """Keep the highest-norm 1x4 blocks of one Dense kernel, `keep_fraction` of its blocks."""
    rows = np.shape(mask)[0]
    alive = np.any(_blocks(mask) > 0, axis=1)  # (blocks along in, out)
    norms = np.sqrt(np.sum((_blocks(scores) * _blocks(mask)) ** 2, axis=1))
    count = mask_math.keep_count(alive.size, keep_fraction)
    count = min(count, int(np.count_nonzero(alive)) or 1)
    kept = _ranked_keep(np.where(alive, norms, -1.0).reshape(-1), count).reshape(alive.shape)
    return np.repeat(kept, BLOCK, axis=0)[:rows].astype(np.float32)


def block_masks(scores, masks, keep, kinds) -> Masks:
    """1x4 blocks in Dense kernels, single weights elsewhere, layer by layer."""
    return {n: block_mask(scores[n], masks[n], keep[n]) if _is_dense_kernel(kinds[n], masks[n])
            else mask_math.magnitude_mask(scores[n], masks[n], keep[n]) for n in masks}


def block_counts(keep, kinds, shapes) -> dict[str, int]:
    return {n: mask_math.keep_count(block_count(shapes[n]) if _is_dense_kernel(kinds[n], shapes[n]) else
                                    int(np.prod(shapes[n])), keep[n]) for n in shapes}


def block_raw_counts(keep, kinds, shapes) -> dict[str, int]:
    return {f"layer {n!r}": int(round((block_count(shapes[n]) if _is_dense_kernel(kinds[n], shapes[n]) else
                                       int(np.prod(shapes[n]))) * keep[n])) for n in shapes}


def _is_dense_kernel(kind: str, mask_or_shape) -> bool:
    shape = mask_or_shape if isinstance(mask_or_shape, tuple) else np.shape(mask_or_shape)
    return kind == "fc" and len(shape) == 2


# -- m_by_n -------------------------------------------------------------------------------------
def m_by_n_eligible(shape: tuple, keep_fraction: float) -> bool:
    """A layer takes 2:4 when its input dimension (axis -2) is a multiple of 4 and its rate prunes it."""
    return len(shape) >= 2 and shape[-2] % M == 0 and keep_fraction < 1.0


def _groups(array: np.ndarray) -> np.ndarray:
    """(..., in, out) as (..., in / 4, 4, out): groups of 4 consecutive along the input dimension."""
    shape = np.shape(array)
    return np.asarray(array).reshape(shape[:-2] + (shape[-2] // M, M, shape[-1]))


def m_by_n_mask(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Of every group of 4 along the input dimension, the 2 highest |scores| among the survivors."""
    keys = np.where(_groups(mask) > 0, np.abs(_groups(scores)).astype(np.float64), -1.0)
    # Rank within each group (axis -2); stable: among ties the lower index is pruned first.
    order = np.argsort(keys, axis=-2, kind="stable")
    ranks = np.argsort(order, axis=-2, kind="stable")
    kept = (ranks >= M - N) & (_groups(mask) > 0)
    return kept.astype(np.float32).reshape(np.shape(mask))


def m_by_n_masks(scores, masks, keep) -> Masks:
    return {n: m_by_n_mask(scores[n], masks[n]) if m_by_n_eligible(np.shape(masks[n]), keep[n])
            else np.asarray(masks[n], np.float32) for n in masks}


def m_by_n_dense_layers(shapes: Mapping[str, tuple], keep: Mapping[str, float]) -> list[str]:
    """The layers 2:4 leaves dense (input dimension not a multiple of 4), for the warning line."""
    return [n for n, s in shapes.items() if keep[n] < 1.0 and not m_by_n_eligible(s, keep[n])]


# -- all granularities --------------------------------------------------------------------------
def select(granularity: str, scores: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray],
           keep: Mapping[str, float], kinds: Mapping[str, str], units: Optional["UnitMap"] = None) -> Masks:
    """The next masks at a structured granularity (`weight` is `tf_lottery.masking.masks.layerwise_masks`)."""
    if granularity == "unit":
        return unit_masks(scores, masks, keep, units)
    if granularity == "block":
        return block_masks(scores, masks, keep, kinds)
    if granularity == "m_by_n":
        return m_by_n_masks(scores, masks, keep)
    raise ValueError(f"unknown granularity {granularity!r}; allowed: unit, block, m_by_n")


def random_masks(granularity: str, masks: Mapping[str, np.ndarray], rng: np.random.Generator,
                 kinds: Mapping[str, str], units: Optional["UnitMap"] = None) -> Masks:
    """Random masks of the same granularity with the same survivors per layer (units, blocks, 2 of 4)."""
    if granularity == "weight":
        return mask_math.random_masks(masks, rng)
    if granularity == "unit":
        alive = []
        for group, now in zip(units.groups, alive_units(masks, units)):
            if group.fixed:
                alive.append(np.ones(group.size, np.float32))
                continue
            kept = np.zeros(group.size, np.float32)
            kept[rng.permutation(group.size)[:int(np.count_nonzero(now))]] = 1.0
            alive.append(kept)
        return masks_of_units(alive, {n: np.shape(m) for n, m in masks.items()}, units)
    if granularity == "block":
        out = {}
        for name, mask in masks.items():
            if not _is_dense_kernel(kinds[name], mask):
                out.update(mask_math.random_masks({name: mask}, rng))
                continue
            alive = np.any(_blocks(mask) > 0, axis=1)
            kept = np.zeros(alive.size, np.float32)
            kept[rng.permutation(alive.size)[:int(np.count_nonzero(alive))]] = 1.0
            out[name] = np.repeat(kept.reshape(alive.shape), BLOCK, axis=0)[:np.shape(mask)[0]].astype(np.float32)
        return out
    if granularity == "m_by_n":
        out = {}
        for name, mask in masks.items():
            if np.shape(mask)[-2] % M or np.all(mask > 0):
                out[name] = np.asarray(mask, np.float32)
                continue
            keys = rng.random(np.shape(mask))
            out[name] = m_by_n_mask(keys, np.ones_like(mask))
        return out
    raise ValueError(f"unknown granularity {granularity!r}; allowed: weight, unit, block, m_by_n")


def check(granularity: str, masks: Mapping[str, np.ndarray], keep: Mapping[str, float], kinds: Mapping[str, str],
          units: Optional["UnitMap"] = None) -> Optional[str]:
    """Why `masks` are not a mask of this granularity at the keep fractions given (None when they are)."""
    if granularity == "unit":
        alive = alive_units(masks, units)
        expected = masks_of_units(alive, {n: np.shape(m) for n, m in masks.items()}, units)
        for name in masks:
            if not np.array_equal(expected[name], masks[name]):
                return f"layer {name!r} is not pruned by whole units"
        for group, now in zip(units.groups, alive):
            want = group.size if group.fixed else mask_math.keep_count(group.size, keep[group.producers[0]])
            if int(np.count_nonzero(now)) != want:
                return f"layer {group.producers[0]!r} keeps {int(np.count_nonzero(now))} units, the config gives {want}"
        return None
    if granularity == "block":
        for name, mask in masks.items():
            if not _is_dense_kernel(kinds[name], mask):
                want, have = mask_math.keep_count(mask.size, keep[name]), int(np.count_nonzero(mask))
            else:
                blocks = _blocks(mask)
                if not np.all((blocks.min(axis=1) == blocks.max(axis=1))[:np.shape(mask)[0] // BLOCK]):
                    return f"layer {name!r} is not pruned by 1x4 blocks"
                want = mask_math.keep_count(block_count(np.shape(mask)), keep[name])
                have = int(np.count_nonzero(np.any(blocks > 0, axis=1)))
            if want != have:
                return f"layer {name!r} keeps {have} blocks or weights, the config gives {want}"
        return None
    if granularity == "m_by_n":
        for name, mask in masks.items():
            if m_by_n_eligible(np.shape(mask), keep[name]):
                if not np.all(np.sum(_groups(mask), axis=-2) == N):
                    return f"layer {name!r} does not keep 2 of every 4 weights"
            elif not np.all(mask > 0):
                return f"layer {name!r} should stay dense under 2:4"
        return None
    return None
