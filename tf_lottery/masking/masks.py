"""Pure mask math for iterative magnitude pruning: NumPy in, NumPy out, no Keras.

A mask is a float32 array of 0s and 1s shaped like its kernel. Every function here takes
the current masks and returns new ones, so that pruning is monotone by construction:
a weight pruned once is never considered again.

Ties in magnitude are broken deterministically: among equal magnitudes the weight with the
lower flat index (and, globally, the earlier layer) is pruned first.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

Masks = dict[str, np.ndarray]


def ones_like(kernels: Mapping[str, np.ndarray]) -> Masks:
    """The dense masks: every weight kept."""
    return {name: np.ones(np.shape(k), np.float32) for name, k in kernels.items()}


def keep_count(size: int, keep_fraction: float) -> int:
    """Weights a tensor of `size` keeps at `keep_fraction`: rounded, and never fewer than one.

    Counting against the original size (not the current survivors) keeps the sparsity
    after round k within one weight of 1-(1-p)^k, instead of drifting by rounding each round.
    """
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"keep fraction {keep_fraction!r} is outside (0, 1]")
    return max(1, min(size, int(round(size * keep_fraction))))


def _keys(scores: np.ndarray, mask: np.ndarray, signed: bool) -> np.ndarray:
    """Sort keys: already-pruned weights lowest, then by |score| (or by the score itself when signed)."""
    flat = np.asarray(scores).reshape(-1).astype(np.float64)
    alive = mask.reshape(-1) > 0
    if not np.all(np.isfinite(flat[alive])):
        raise ValueError("scores of surviving weights are not finite (NaN or inf); allowed: finite scores")
    if signed:
        return np.where(alive, flat, -np.inf)
    return np.where(alive, np.abs(flat), -1.0)


def _prune_order(scores: np.ndarray, mask: np.ndarray, signed: bool = False) -> np.ndarray:
    """Flat indices ordered from first-to-prune to last: already-pruned first, then by score."""
    return np.argsort(_keys(scores, mask, signed), kind="stable")


def magnitude_mask(kernel: np.ndarray, mask: np.ndarray, keep_fraction: float, signed: bool = False) -> np.ndarray:
    """Keep the largest-magnitude (or, `signed`, highest-scoring) surviving weights of one tensor,
    `keep_fraction` of its size."""
    _check_pair("kernel", kernel, mask)
    keep = keep_count(mask.size, keep_fraction)
    keep = min(keep, int(np.count_nonzero(mask)) or 1)
    order = _prune_order(kernel, mask, signed)
    new = np.zeros(mask.size, np.float32)
    new[order[mask.size - keep:]] = 1.0
    return new.reshape(mask.shape)


def layerwise_masks(
    kernels: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    keep_fractions: Mapping[str, float],
    signed: bool = False,
) -> Masks:
    """Prune each layer separately to its own keep fraction (the paper's default)."""
    return {
        name: magnitude_mask(kernels[name], masks[name], keep_fractions[name], signed) for name in masks
    }


def global_masks(
    kernels: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    keep_fraction: float,
    signed: bool = False,
) -> Masks:
    """Prune all given layers together by one magnitude threshold (the paper's VGG/Resnet mode).

    The pool keeps `keep_fraction` of its total size; each layer keeps at least one weight so
    the network stays connected.
    """
    names = list(masks)
    if not names:
        return {}
    for name in names:
        _check_pair(name, kernels[name], masks[name])
    sizes = [masks[n].size for n in names]
    total = int(sum(sizes))
    keep = keep_count(total, keep_fraction)
    surviving = int(sum(np.count_nonzero(masks[n]) for n in names))
    keep = min(keep, surviving)

    magnitudes = np.concatenate([_keys(kernels[n], masks[n], signed) for n in names])
    # Stable sort over the concatenation: ties go to the earlier layer, then the lower index.
    order = np.argsort(magnitudes, kind="stable")
    flat = np.zeros(total, np.float32)
    if keep > 0:
        flat[order[total - keep:]] = 1.0
    offsets = np.cumsum([0] + sizes)
    result = {}
    for i, name in enumerate(names):
        layer = flat[offsets[i]:offsets[i + 1]].copy()
        if not layer.any():
            # Keep the layer's largest survivor so no layer is cut off entirely.
            layer[_prune_order(kernels[name], masks[name], signed)[-1]] = 1.0
        result[name] = layer.reshape(masks[name].shape)
    return result


def random_masks(
    masks: Mapping[str, np.ndarray], rng: np.random.Generator
) -> Masks:
    """Random masks with exactly the same number of survivors per layer (the random-pruning control)."""
    result = {}
    for name, mask in masks.items():
        keep = int(np.count_nonzero(mask))
        flat = np.zeros(mask.size, np.float32)
        flat[rng.permutation(mask.size)[:keep]] = 1.0
        result[name] = flat.reshape(mask.shape)
    return result


def weights_remaining(masks: Mapping[str, np.ndarray]) -> float:
    """Fraction of all masked weights that survive (the paper's Pm)."""
    total = sum(m.size for m in masks.values())
    return float(sum(np.count_nonzero(m) for m in masks.values()) / total) if total else 1.0


def layer_weights_remaining(masks: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Fraction of surviving weights of each layer."""
    return {name: float(np.count_nonzero(m) / m.size) for name, m in masks.items()}


def is_subset(new: Mapping[str, np.ndarray], old: Mapping[str, np.ndarray]) -> bool:
    """True when every weight kept by `new` was also kept by `old` (monotone pruning)."""
    return all(not np.any((new[n] > 0) & (old[n] == 0)) for n in old)


def _check_pair(name: str, kernel: np.ndarray, mask: np.ndarray) -> None:
    if np.shape(kernel) != np.shape(mask):
        raise ValueError(
            f"mask for {name!r} has shape {np.shape(mask)} but its kernel has shape {np.shape(kernel)}"
        )
