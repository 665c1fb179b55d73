"""Random pruning at each level: the same per-layer rates as magnitude pruning, weights chosen at random."""

import numpy as np

from tf_lottery.strategies.base import PruneInputs, Strategy


def scores(inputs: PruneInputs):
    rng = np.random.default_rng([inputs.seed, inputs.level])
    return {name: rng.random(np.shape(kernel)) for name, kernel in inputs.kernels.items()}


STRATEGY = Strategy(
    name="random",
    description="survivors drawn at random at the pruning rates (a baseline; the random_prune control instead copies the ticket's counts)",
    scores=scores,
    structured=True,
)
