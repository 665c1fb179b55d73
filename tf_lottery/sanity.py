"""The sanity checks of Frankle, Dziugaite, Roy & Carbin (ICLR 2021) as pure mask functions.

"Pruning Neural Networks at Initialization: Why are We Missing the Mark?" asks whether a
pruning method's mask carries information beyond each layer's density, with three ablations:

- Shuffle: permute each layer's mask at random (same count per layer) and train from the same
  initialization: `shuffle_masks` below.
- Reinitialize: keep the mask, draw the kept weights afresh from the initialization
  distribution. That is the existing random re-initialization control,
  `tf_lottery.pruning.reinitialized` (each prunable kernel redrawn from its layer's
  initializer; restoring it under the mask zeroes the pruned weights), so it is not
  duplicated here.
- Invert: keep the lowest-scoring weights instead of the highest: select on the negated scores
  with `tf_lottery.selection`.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from tf_lottery.masks import Masks, random_masks


def shuffle_masks(masks: Mapping[str, np.ndarray], seed: int) -> Masks:
    """Randomly permute the entries of each layer's mask: the same number of survivors per layer.

    A uniformly random permutation of a 0/1 mask puts its survivors on a uniformly random
    subset of the same size, which is exactly what the random-pruning control
    (`masks.random_masks`) draws; this names that control after the paper's sanity check and
    seeds it from an integer.

    Args:
        masks: {layer name: float32 0/1 mask}.
        seed: seed of the NumPy generator; the same seed and masks give the same result.

    Returns:
        {layer name: float32 0/1 mask} with each layer's count unchanged, in `masks`' order.
    """
    return random_masks(masks, np.random.default_rng(seed))
