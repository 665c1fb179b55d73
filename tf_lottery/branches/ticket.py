"""The winning ticket itself: the pruned mask with survivors at the rewind point."""

from tf_lottery.branches.base import Branch, BranchInputs


def start(inputs: BranchInputs):
    return inputs.masks, inputs.weights


BRANCH = Branch(
    name="main",
    label="winning ticket",
    description="the ticket: pruned mask, survivors reset to the rewind point",
    seed_offset=0,
    start=start,
)
