"""The paper's random re-initialization control: the ticket's mask with freshly drawn weights."""

from tf_lottery.branches.base import Branch, BranchInputs


def start(inputs: BranchInputs):
    from tf_lottery.masking import pruning  # TF-MOT: the registry lists branches (report, --help) without it

    return inputs.masks, pruning.reinitialized(inputs.model, inputs.weights, inputs.seed)


BRANCH = Branch(
    name="random_reinit",
    label="random reinit",
    description="the ticket's mask, kernels drawn afresh from their initializers (Frankle & Carbin 2019)",
    seed_offset=1,
    start=start,
)
