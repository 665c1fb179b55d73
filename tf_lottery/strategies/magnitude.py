"""Magnitude pruning (the paper's): keep the largest-magnitude weights of the trained network."""

from tf_lottery.strategies.base import PruneInputs, Strategy


def scores(inputs: PruneInputs):
    return dict(inputs.kernels)


STRATEGY = Strategy(
    name="magnitude",
    description="largest |w| of the previous round's trained weights survive (Frankle & Carbin 2019)",
    scores=scores,
    structured=True,
)
