"""Score inversion (Frankle, Dziugaite, Roy & Carbin, ICLR 2021): keep the lowest-scoring weights.

At each level the strategy's scores are ranked the other way round: the survivors are the
weights the ticket prunes first, with the ticket's counts (per layer, or over the global pool),
trained from the ticket's start. A method whose scores carry information loses accuracy when
inverted; one that only chooses how many weights each layer keeps does not.
"""

from tf_lottery.branches.base import Branch, BranchInputs


def start(inputs: BranchInputs):
    if inputs.inverted is None:
        raise ValueError("the inverted control needs the level's scores: train it with find_ticket or lottery-find "
                         "(controls=inverted), not from a callback")
    return inputs.inverted(), inputs.weights


BRANCH = Branch(
    name="inverted",
    label="inverted scores",
    description="the strategy's lowest-scoring weights, with the ticket's counts, at the rewind point (Frankle et al. 2021)",
    seed_offset=4,
    start=start,
)
