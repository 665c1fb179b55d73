"""Masks from signed importance scores: keep the highest scores, layer by layer or pooled.

`tf_lottery.masks` ranks weights by |value|, which is right for magnitudes and for the
non-negative scores of SNIP and SynFlow, but not for GraSP, whose keep-score is signed
(a large negative score must be pruned before a small positive one). The functions here
rank by the score itself and otherwise follow `masks.py` exactly: counts come from
`masks.keep_count` against the full size, already-pruned weights are pruned first (they are
never revived), ties go to the lower flat index and, globally, to the earlier layer, and
every layer keeps at least one weight. On non-negative scores they return the same masks as
`masks.layerwise_masks` / `masks.global_masks`, bit for bit.

The "inverted" sanity check of Frankle et al. (ICLR 2021), which keeps the lowest-scoring
weights instead, is these functions applied to the negated scores.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np

from tf_lottery.masks import Masks, keep_count


def select_layerwise(
    scores: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    keep_fractions: Mapping[str, float],
) -> Masks:
    """Keep the highest-scoring surviving weights of each layer, `keep_fractions[name]` of its size.

    Args:
        scores: {layer name: score array shaped like the mask}; higher means keep. Only the
            surviving positions are read.
        masks: {layer name: current float32 0/1 mask}.
        keep_fractions: {layer name: fraction in (0, 1] of the layer's full size to keep}.

    Returns:
        {layer name: new float32 0/1 mask}, a subset of `masks`.

    Raises:
        ValueError: a layer lacks a score or keep fraction, a score's shape differs from its
            mask's, a surviving score is not finite, or a fraction is outside (0, 1].
    """
    result = {}
    for name, mask in masks.items():
        if name not in keep_fractions:
            raise ValueError(f"no keep fraction for layer {name!r}; given for {sorted(keep_fractions)}")
        score = _checked_score(name, scores, mask)
        keep = keep_count(mask.size, keep_fractions[name])
        # As masks.magnitude_mask: never more than the survivors (and one if none survive).
        keep = min(keep, int(np.count_nonzero(mask)) or 1)
        order = np.argsort(_keyed(score, mask), kind="stable")
        new = np.zeros(mask.size, np.float32)
        new[order[mask.size - keep:]] = 1.0
        result[name] = new.reshape(mask.shape)
    return result


def select_global(
    scores: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    keep_fraction: float,
    exempt: Iterable[str] = (),
) -> Masks:
    """Keep the highest-scoring surviving weights of all non-exempt layers pooled together.

    The pool keeps `keep_fraction` of its total size (the exempt layers' sizes are not part of
    it); each pooled layer keeps at least its best-scoring survivor, so no layer is cut off.
    Exempt layers keep their current masks unchanged (open_lth's `pruning_layers_to_ignore`).

    Args:
        scores: {layer name: score array shaped like the mask}; higher means keep. Exempt
            layers need no score.
        masks: {layer name: current float32 0/1 mask}.
        keep_fraction: fraction in (0, 1] of the pool's size to keep.
        exempt: names of layers left out of the pool.

    Returns:
        {layer name: new float32 0/1 mask} for every layer of `masks`, each a subset of its
        current mask.

    Raises:
        ValueError: an exempt name is not a layer, a pooled layer lacks a score or its shape
            differs from its mask's, a surviving score is not finite, or `keep_fraction` is
            outside (0, 1].
    """
    exempt = set(exempt)
    unknown = sorted(exempt - set(masks))
    if unknown:
        raise ValueError(f"exempt layers {unknown} are not among the masked layers {sorted(masks)}")
    names = [n for n in masks if n not in exempt]
    result = {n: np.array(masks[n], np.float32, copy=True) for n in masks if n in exempt}
    if not names:
        return result
    keyed = [_keyed(_checked_score(n, scores, masks[n]), masks[n]) for n in names]
    sizes = [masks[n].size for n in names]
    total = int(sum(sizes))
    keep = keep_count(total, keep_fraction)
    keep = min(keep, int(sum(np.count_nonzero(masks[n]) for n in names)))
    # Stable sort over the concatenation: ties go to the earlier layer, then the lower index.
    order = np.argsort(np.concatenate(keyed), kind="stable")
    flat = np.zeros(total, np.float32)
    if keep > 0:
        flat[order[total - keep:]] = 1.0
    offsets = np.cumsum([0] + sizes)
    for i, name in enumerate(names):
        layer = flat[offsets[i]:offsets[i + 1]].copy()
        if not layer.any():
            layer[np.argsort(keyed[i], kind="stable")[-1]] = 1.0
        result[name] = layer.reshape(masks[name].shape)
    return {n: result[n] for n in masks}


def _keyed(score: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Flat float64 sort keys: the score where the weight survives, -inf where it is pruned."""
    return np.where(mask.reshape(-1) > 0, score.reshape(-1).astype(np.float64), -np.inf)


def _checked_score(name: str, scores: Mapping[str, np.ndarray], mask: np.ndarray) -> np.ndarray:
    if name not in scores:
        raise ValueError(f"no score for layer {name!r}; scores are for {sorted(scores)}")
    score = np.asarray(scores[name])
    if score.shape != np.shape(mask):
        raise ValueError(
            f"score for layer {name!r} has shape {score.shape} but its mask has shape {np.shape(mask)}"
        )
    surviving = score[np.asarray(mask) > 0]
    if not np.all(np.isfinite(surviving)):
        raise ValueError(
            f"score for layer {name!r} has {int(np.count_nonzero(~np.isfinite(surviving)))} "
            "non-finite values at surviving weights; scores must be finite to rank"
        )
    return score
