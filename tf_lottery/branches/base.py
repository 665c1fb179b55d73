"""What a branch is: a network trained beside each pruned ticket, from a start its entry defines.

The ticket itself is the branch `main`; the paper's controls (random re-initialization, random
pruning) and later experiments are branches too. A branch says where its network starts (masks
and weights) given the ticket's; the driver trains it like any stage and records it under
`round_RR/<name>.json`. No TensorFlow at import: entries import what they need when called.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class BranchInputs:
    """The ticket at one level: its masks, its rewind weights, the wrapped model, and a seed for this branch."""

    masks: Mapping[str, np.ndarray]
    weights: list[np.ndarray]
    model: Any
    seed: int
    granularity: str = "weight"  # what a random mask of the same structure removes (`tf_lottery.masking.granularity`)
    kinds: Mapping[str, str] = dataclasses.field(default_factory=dict)
    units: Any = None  # the traced unit graph, for granularity='unit'
    # The level's masks pruned by the lowest scores instead (the score-inversion control); a driver
    # that can score the level (the search) supplies it.
    inverted: Optional[Callable[[], Mapping[str, np.ndarray]]] = None


@dataclasses.dataclass(frozen=True)
class Branch:
    """A registered branch: its name (the file name in each round), a label for plots, a seed offset
    (distinct per branch, so branches draw different random numbers), and its start."""

    name: str
    label: str
    description: str
    seed_offset: int
    start: Callable[[BranchInputs], tuple[Mapping[str, np.ndarray], list[np.ndarray]]]
