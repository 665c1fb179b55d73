"""The Keras callback that makes any `model.fit` loop an IMP search.

It records the rewind point (theta_0 at the start of the first training run, or the weights
after `rewind_step` iterations), and at the end of each pruning round computes the next mask
from the trained weights and resets the survivors to the rewind point. The driver in
`lottery.py` uses this same callback; it calls `end_round()` itself because it may split a
round into several `fit` calls (evaluation periods, resumption).
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
import tf_keras as keras

from tf_lottery import config as config_lib
from tf_lottery import masks as mask_math
from tf_lottery import pruning


class LotteryCallback(keras.callbacks.Callback):
    """Record the rewind weights, then prune by magnitude and rewind after each round.

    Use it on a model wrapped by `tf_lottery.wrap` (or `prune_low_magnitude` with a frozen
    schedule), with a fresh masked optimizer each round, for example
    `model.compile(tf_lottery.masked_optimizer(Adam(1.2e-3), model), ...)`; on a `wrap`ped
    model any other optimizer is refused when training begins.
    """

    def __init__(
        self,
        fc_rate: float = 0.2,
        conv_rate: float = 0.1,
        output_rate: Optional[float] = None,
        scope: str = "layerwise",
        schedule: str = "iterative",
        rewind_step: int = 0,
        prune_at_train_end: bool = True,
    ):
        super().__init__()
        config_lib._check_rate("fc_rate", fc_rate)
        config_lib._check_rate("conv_rate", conv_rate)
        config_lib._check_rate("output_rate", output_rate, allow_zero=True)
        config_lib._check_choice("pruning_scope", scope, config_lib.SCOPES)
        config_lib._check_choice("schedule", schedule, config_lib.SCHEDULES)
        self.fc_rate, self.conv_rate, self.output_rate = fc_rate, conv_rate, output_rate
        self.scope, self.schedule = scope, schedule
        self.rewind_step = int(rewind_step)
        self.prune_at_train_end = prune_at_train_end
        self.rewind_weights: Optional[list[np.ndarray]] = None
        self.level = 0  # the pruning level of the mask in force: round r trains at level r
        self.dense_kernels: Optional[dict[str, np.ndarray]] = None
        self.trained_weights: Optional[list[np.ndarray]] = None

    # -- recording the rewind point -------------------------------------------------------
    def on_train_begin(self, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        if pruning.needs_masked_optimizer(self.model) and not pruning.is_masked_optimizer_for(optimizer, self.model):
            raise ValueError(
                f"optimizer {type(optimizer).__name__} does not mask this model's gradients; compile with "
                "tf_lottery.masked_optimizer(optimizer, model) so pruned weights stay exactly 0"
            )
        if self.rewind_weights is None and self.rewind_step == 0:
            self.rewind_weights = pruning.snapshot(self.model)

    def _implements_train_batch_hooks(self):
        # Per-batch hooks slow every step; only the run that must catch iteration k pays for them.
        return self.rewind_weights is None and self.rewind_step > 0

    def on_train_batch_end(self, batch, logs=None):
        if self.rewind_weights is None and self.rewind_step > 0:
            if int(self.model.optimizer.iterations.numpy()) == self.rewind_step:
                self.rewind_weights = pruning.snapshot(self.model)

    def on_train_end(self, logs=None):
        if self.prune_at_train_end:
            self.end_round()

    # -- pruning and rewinding --------------------------------------------------------------
    def rates(self) -> dict[str, float]:
        return pruning.layer_rates(self.model, self.fc_rate, self.conv_rate, self.output_rate)

    def keep_fractions(self, level: int) -> dict[str, float]:
        """Fraction of each layer's weights kept at a pruning level: (1 - rate) ** level."""
        return {name: (1.0 - rate) ** level for name, rate in self.rates().items()}

    def next_masks(
        self, kernels: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], level: int
    ) -> dict[str, np.ndarray]:
        """Masks for `level` from trained `kernels` (one-shot: from the dense run's kernels)."""
        if self.schedule == "one_shot":
            kernels = self.dense_kernels if self.dense_kernels is not None else kernels
            masks = mask_math.ones_like(kernels)
        keep = self.keep_fractions(level)
        if self.scope == "layerwise":
            return mask_math.layerwise_masks(kernels, masks, keep)
        out_name = pruning.output_layer_name(self.model)
        pooled = {n: m for n, m in masks.items() if n != out_name}
        kinds = pruning.layer_kinds(self.model)
        rate = self.conv_rate if any(kinds[n] == "conv" for n in pooled) else self.fc_rate
        result = mask_math.global_masks(kernels, pooled, (1.0 - rate) ** level)
        result[out_name] = mask_math.magnitude_mask(kernels[out_name], masks[out_name], keep[out_name])
        return result

    def end_round(self) -> dict[str, np.ndarray]:
        """Prune the trained weights to the next level and rewind the survivors; return the new masks."""
        if self.rewind_weights is None:
            raise ValueError(
                f"rewind_step={self.rewind_step} was never reached: training ended at iteration "
                f"{int(self.model.optimizer.iterations.numpy())}; allowed: 0 <= rewind_step < iterations"
            )
        self.trained_weights = pruning.snapshot(self.model)
        kernels = pruning.get_kernels(self.model)
        if self.level == 0:
            self.dense_kernels = kernels
        new_masks = self.next_masks(kernels, pruning.get_masks(self.model), self.level + 1)
        pruning.set_masks(self.model, new_masks)
        pruning.restore(self.model, self.rewind_weights)
        self.level += 1
        return new_masks
