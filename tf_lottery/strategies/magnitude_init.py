"""Magnitude at initialization: keep the largest |w| of theta_0 (a baseline of Frankle et al. 2021)."""

from tf_lottery.strategies.base import PruneInputs, Strategy


def scores(inputs: PruneInputs):
    return dict(inputs.kernels)


STRATEGY = Strategy(
    name="magnitude_init",
    description="at initialization: largest |w| of theta_0 survive (a baseline of Frankle et al. 2021)",
    scores=scores,
    at_init=True,
    structured=True,
)
