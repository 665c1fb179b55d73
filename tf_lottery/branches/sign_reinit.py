"""Zhou et al. (2019), "Deconstructing Lottery Tickets": the ticket's mask and signs, fresh magnitudes.

Kernels are drawn afresh from their initializers and given the signs of the rewind weights;
Zhou et al. found that keeping the signs recovers most of a ticket's advantage.
"""

import numpy as np

from tf_lottery.branches.base import Branch, BranchInputs


def start(inputs: BranchInputs):
    from tf_lottery.masking import pruning  # TF-MOT: the registry lists branches (report, --help) without it

    fresh = pruning.reinitialized(inputs.model, inputs.weights, inputs.seed)
    values = [w.copy() for w in inputs.weights]
    for position in pruning.kernel_positions(inputs.model).values():
        values[position] = (np.abs(fresh[position]) * np.sign(inputs.weights[position])).astype(fresh[position].dtype)
    return inputs.masks, values


BRANCH = Branch(
    name="sign_reinit",
    label="reinit, ticket's signs",
    description="the ticket's mask, fresh magnitudes with the signs of the rewind weights (Zhou et al. 2019)",
    seed_offset=3,
    start=start,
)
