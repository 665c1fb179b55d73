"""GraSP (Wang, Zhang & Grosse, ICLR 2020): prune at initialization to preserve gradient flow, w * Hg."""

from tf_lottery.strategies.base import PruneInputs, Strategy


def scores(inputs: PruneInputs):
    from tf_lottery.masking import scoring  # TensorFlow: the registry lists strategies without it

    return scoring.grasp_scores(inputs.model, inputs.batches, inputs.loss)


STRATEGY = Strategy(
    name="grasp",
    description="at initialization: keep the highest w * Hg, ranked by sign (Wang et al. 2020)",
    scores=scores,
    at_init=True,
    signed=True,
    needs_model=True,
    needs_data=True,
)
