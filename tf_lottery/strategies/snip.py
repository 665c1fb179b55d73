"""SNIP (Lee, Ajanthan & Torr, ICLR 2019): prune at initialization by connection sensitivity |g * w|."""

from tf_lottery.strategies.base import PruneInputs, Strategy


def scores(inputs: PruneInputs):
    from tf_lottery.masking import scoring  # TensorFlow: the registry lists strategies without it

    return scoring.snip_scores(inputs.model, inputs.batches, inputs.loss)


STRATEGY = Strategy(
    name="snip",
    description="at initialization: |dL/dw * w| on a few training batches (Lee et al. 2019)",
    scores=scores,
    at_init=True,
    needs_model=True,
    needs_data=True,
)
