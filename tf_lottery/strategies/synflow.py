"""SynFlow (Tanaka et al., NeurIPS 2020): data-free pruning at initialization, re-scored over 100 steps.

Each step keeps the level's keep fractions raised to k/100 (the paper's exponential schedule),
so the last step lands on the level's fractions; the selection (layerwise or global, output
layer at its own rate) is the same as for every strategy.
"""

import math

from tf_lottery.strategies.base import PruneInputs, Strategy, keep_fractions, pooled_rate, select

ITERATIONS = 100


def scores(inputs: PruneInputs):
    from tf_lottery.masking import scoring  # TensorFlow: the registry lists strategies without it

    return scoring.synflow_scores(inputs.model)


def select_iteratively(config, inputs: PruneInputs, invert: bool = False):
    from tf_lottery.masking import scoring  # TensorFlow: the registry lists strategies without it

    names = list(inputs.kinds)
    final = (1.0 - pooled_rate(config, inputs.kinds)) ** inputs.level if config.pruning_scope != "layerwise" \
        else keep_fractions(config, inputs.kinds, inputs.level)[names[0]]

    def step(step_scores, masks, fraction):
        level = inputs.level * (math.log(fraction) / math.log(final) if final < 1.0 else 1.0)
        return select(config, step_scores, masks, inputs.kinds, level, invert=invert)

    return scoring.synflow_masks(inputs.model, inputs.masks, final, iterations=ITERATIONS, select=step)


STRATEGY = Strategy(
    name="synflow",
    description="at initialization, data-free: |dR/dw * w| of the all-ones input, 100 re-scoring steps (Tanaka et al. 2020)",
    scores=scores,
    at_init=True,
    needs_model=True,
    select=select_iteratively,
)
