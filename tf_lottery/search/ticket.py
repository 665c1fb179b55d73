"""What a search hands back: every round's masks and metrics, and its networks, kept apart by name.

A round's *trained* network (what you evaluate, export or serve) and its *rewound* network
(the ticket at its rewind point, what you retrain) are different models: `trained_model()` and
`rewound_model()` build each on demand from the run directory, so they cannot be confused.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from tf_lottery import branches, keras3
from tf_lottery.masking import masks as mask_math
from tf_lottery.masking import pruning
from tf_lottery.search import checkpoints
from tf_lottery.search import run_directory as rundir


@dataclasses.dataclass(repr=False)
class Ticket:
    """The result of `find_ticket`.

    Attributes:
      rounds: per-round metrics, as in summary.json (round 0 is the dense network).
      round_masks: the mask trained in each round.
      rewind_weights: the point survivors are reset to (theta_0, or the weights at `rewind_step`).
      output_dir: the run directory (a temporary one, removed with this object, if none was given).
    """

    config: Any
    rounds: list[dict]
    round_masks: list[dict[str, np.ndarray]]
    rewind_weights: list[np.ndarray]
    output_dir: str
    _search: Any = None
    _keep: Any = None  # the TemporaryDirectory holding output_dir, when the user gave none
    _check_images: Optional[np.ndarray] = None
    _keras3_template: Any = None

    # -- the sparsest ticket ------------------------------------------------------------------
    @property
    def masks(self) -> dict[str, np.ndarray]:
        """The masks of the last (sparsest) round."""
        return self.round_masks[-1]

    @property
    def weights_remaining(self) -> float:
        return mask_math.weights_remaining(self.masks)

    @property
    def theta_0(self) -> list[np.ndarray]:
        """Every parameter before training (equal to `rewind_weights` when rewind_step is 0)."""
        return self._search.theta_0()

    @property
    def initial_weights(self):
        raise AttributeError(
            "Ticket.initial_weights was ambiguous (it held the rewind point, not always the initial weights); use "
            "ticket.rewind_weights (what survivors are reset to) or ticket.theta_0 (every parameter before training)"
        )

    @property
    def model(self):
        raise AttributeError(
            "Ticket.model was ambiguous (it held the rewind point, not the trained network); use "
            "ticket.trained_model(round) to evaluate or export, ticket.rewound_model(round) to retrain"
        )

    def best_round(self) -> dict:
        """The round with the highest early-stop test accuracy (ties: the sparser round)."""
        return self.rounds[self.round_index("best")]

    def round_index(self, which="best") -> int:
        """'best', 'last' or a round number, as a round number."""
        return rundir.select_round(self.rounds, which)

    # -- models -----------------------------------------------------------------------------------
    def trained_model(self, round="best", strip: bool = True):
        """The network trained in `round`, pruned weights exactly 0.

        Plain tf-keras layers when `strip` (what to evaluate, save or serve); otherwise still in
        pruning wrappers, masks in place.
        """
        index = self.round_index(round)
        model = self._search.model
        pruning.set_masks(model, self.round_masks[index])
        checkpoints.restore_round(self._search.run, index, model)
        return _independent(pruning.strip(model)) if strip else _copy_wrapped(model)

    def rewound_model(self, round="last"):
        """The ticket of `round` at its rewind point, in pruning wrappers: what IMP retrains."""
        index = self.round_index(round)
        model = self._search.model
        pruning.set_masks(model, self.round_masks[index])
        pruning.restore(model, self._search.theta_0() if index == 0 else self.rewind_weights)
        return _copy_wrapped(model)

    def control_model(self, name: str, round="last"):
        """The start of a control (`random_reinit`, `random_prune`, ...) of `round`, in wrappers, ready to train."""
        index = self.round_index(round)
        branch = branches.get(name)
        seed = branches.stage_seed(self.config.runtime.seed, index, name)
        model = self._search.model
        masks, weights = branch.start(self._search.branch_inputs(self.round_masks[index], self.rewind_weights, seed, index))
        pruning.set_masks(model, dict(masks))
        pruning.restore(model, weights)
        return _copy_wrapped(model)

    def to_keras(self, round="best", trained: bool = True):
        """The ticket as a Keras 3 model (like the one you passed in): `round`'s trained network, or
        with `trained=False` its rewound one; pruned weights exactly 0."""
        model = self.trained_model(round, strip=False) if trained else self.rewound_model(round)
        return keras3.to_keras3(model, template=self._keras3_template)

    def export(self, export_base: str, round="best", **kwargs):
        """Export `round`'s trained network for TF Serving (see `tf_lottery.export.export_model`)."""
        from tf_lottery import export  # the one allowed upward import (docs/architecture.md)

        index = self.round_index(round)
        kwargs.setdefault("images", self._check_images)
        metadata = {"run_dir": self.output_dir if self._keep is None else None, "round": index}
        return export.export_model(self.trained_model(index, strip=False), export_base, metadata=metadata, **kwargs)

    def __repr__(self) -> str:
        best = self.best_round()
        return (
            f"Ticket({len(self.rounds)} rounds, sparsest {100 * self.weights_remaining:.2f}% of weights, "
            f"best early-stop test accuracy {best['early_stop_test_accuracy']:.4f} at round {best['round']}, "
            f"output_dir={self.output_dir!r})"
        )


def _independent(model):
    """A copy with its own variables: TF-MOT's strip_pruning hands back the wrapped layers themselves."""
    import tf_keras as keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _copy_wrapped(model):
    """A new wrapped model with `model`'s weights and masks (so later calls do not change it)."""

    copy = pruning.wrap(_independent(pruning.strip(model)), warn=False)
    pruning.set_masks(copy, pruning.get_masks(model))
    pruning.restore(copy, pruning.snapshot(model))
    return copy

