"""The paper's random pruning control: a random mask with the ticket's per-layer counts, at the rewind point."""

import numpy as np

from tf_lottery.branches.base import Branch, BranchInputs
from tf_lottery.masking import granularity as granular
from tf_lottery.masking import masks as mask_math


def start(inputs: BranchInputs):
    rng = np.random.default_rng(inputs.seed)
    if inputs.granularity == "weight":
        return mask_math.random_masks(inputs.masks, rng), inputs.weights
    # A structured ticket's control is a random mask of the same structure: random units, blocks or 2:4 picks.
    return granular.random_masks(inputs.granularity, inputs.masks, rng, inputs.kinds, inputs.units), inputs.weights


BRANCH = Branch(
    name="random_prune",
    label="random pruning",
    description="a random mask with the ticket's survivors per layer, weights at the rewind point (Frankle & Carbin 2019)",
    seed_offset=2,
    start=start,
)
