"""GraSP by magnitude (Frankle, Dziugaite, Roy & Carbin, ICLR 2021): keep the highest |w * Hg|.

Frankle et al. found GraSP's signed ranking no better than random pruning and proposed ranking
by the magnitude of the same score; the scores are GraSP's (`tf_lottery.masking.scoring.grasp_scores`).
"""

from tf_lottery.strategies.base import Strategy
from tf_lottery.strategies.grasp import scores

STRATEGY = Strategy(
    name="grasp_magnitude",
    description="at initialization: keep the highest |w * Hg|, GraSP's score by magnitude (Frankle et al. 2021)",
    scores=scores,
    at_init=True,
    signed=False,
    needs_model=True,
    needs_data=True,
)
