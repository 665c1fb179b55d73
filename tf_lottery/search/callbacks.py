"""`LotteryCallback`: IMP inside your own `model.fit` loop, one `fit` call per round.

A thin adapter over the pure pruning function (`tf_lottery.strategies.prune`): when a `fit`
starts after a finished one, it prunes the model's trained weights to the next level and resets
the survivors to the rewind point; then the round trains. After `fit` returns the model holds
that round's *trained* network, as Keras leaves any model. Masks belong to tf_lottery: a restore
that changes them (`load_weights`, `EarlyStopping(restore_best_weights=True)` from another round,
`set_weights`) is undone at the next epoch end or fit start, with one warning line, whatever
the callback order. Pruned weights stay 0 with any optimizer (see `tf_lottery.masking.pruning`), and a
reused optimizer is reset at each round start, as the paper trains each round with a fresh one.
"""

from __future__ import annotations

import warnings
from typing import Optional

import numpy as np
import tf_keras as keras

from tf_lottery import branches, strategies
from tf_lottery.config import PruningConfig, RuntimeConfig
from tf_lottery.masking import masks as mask_math
from tf_lottery.masking import pruning, unit_graph


def _build_optimizer(optimizer, variables) -> None:
    """Create the optimizer's slots now, so that its fresh state can be recorded (and restored each round)."""
    if hasattr(optimizer, "_create_all_weights"):  # a legacy optimizer
        optimizer._create_all_weights(variables)  # noqa: SLF001
    elif not getattr(optimizer, "_built", False):
        optimizer.build(variables)


def _optimizer_variables(optimizer) -> list:
    variables = optimizer.variables
    return list(variables() if callable(variables) else variables)


class LotteryCallback(keras.callbacks.Callback):
    """Record the rewind point, then at each new `fit` prune the last round's trained weights and rewind.

    Args:
      fc_rate, conv_rate, output_rate, pruning_scope, schedule, rewind_step, pruning_strategy,
        granularity: as in `tf_lottery.PruningConfig` (or pass `config=` a PruningConfig).
      reset_optimizer: give each round a fresh optimizer state (the paper); False keeps it. With
        `rewind_step` k > 0 the fresh state's step counter is k, so a learning-rate schedule keyed on
        `optimizer.iterations` continues from k, as weight rewinding prescribes and `find_ticket` does
        (fit each round for the T - k iterations left).
      seed: the run's seed (`RuntimeConfig.seed`). Level l prunes with
        `branches.stage_seed(seed, l, "main")` and controls start with `stage_seed(seed, l, name)`,
        the seeds `find_ticket` uses, so both give the same masks from the same trained kernels.

    Use it on a model wrapped by `tf_lottery.wrap` (or by TF-MOT's `prune_low_magnitude`, whose
    schedule it freezes), compiled with any Keras optimizer.
    """

    def __init__(self, fc_rate: float = 0.2, conv_rate: float = 0.1, output_rate: Optional[float] = None,
                 pruning_scope: str = "layerwise", schedule: str = "iterative", rewind_step: int = 0,
                 pruning_strategy: str = "magnitude", reset_optimizer: bool = True,
                 config: Optional[PruningConfig] = None, seed: int = 0, keep_one_weight: bool = False,
                 granularity: str = "weight"):
        super().__init__()
        self.config = config or PruningConfig(
            fc_rate=fc_rate, conv_rate=conv_rate, output_rate=output_rate, pruning_scope=pruning_scope,
            schedule=schedule, rewind_step=rewind_step, pruning_strategy=pruning_strategy,
            keep_one_weight=keep_one_weight, granularity=granularity,
        )
        strategies.check_granularity(self.config)
        if self.config.retrain != "weight_rewind":  # the callback rewinds weights; the others would be silent
            raise ValueError(
                f"retrain={self.config.retrain!r}: LotteryCallback rewinds the survivors' weights each round; "
                "allowed: retrain='weight_rewind' (use find_ticket for lr_rewind and finetune)")
        strategy = strategies.get(self.config.pruning_strategy)
        if strategy.needs_model:
            raise ValueError(f"pruning_strategy={self.config.pruning_strategy!r} needs data; use find_ticket for it")
        self.reset_optimizer = reset_optimizer
        RuntimeConfig(seed=seed)  # the same bounds as a run's seed, in one line
        self.seed = seed
        self.level = 0  # the level of the mask in force: round r trains at level r
        self.rewind_weights: Optional[list[np.ndarray]] = None
        self.initial_weights: Optional[list[np.ndarray]] = None
        self.trained_weights: Optional[list[np.ndarray]] = None
        self.dense_kernels: Optional[dict[str, np.ndarray]] = None
        self._masks: Optional[dict[str, np.ndarray]] = None
        self._round_done = False
        self._optimizer = None
        self._optimizer_start: Optional[list[np.ndarray]] = None
        self._used_in_round: Optional[int] = None
        self._units = None  # the traced unit graph of the fitted model (granularity='unit')

    # -- rates --------------------------------------------------------------------------------
    def rates(self, model: Optional[keras.Model] = None) -> dict[str, float]:
        """Per-round pruning rate of each masked layer of `model` (or the fitted one); by kind without a model."""
        model = model or self.model
        c = self.config
        if model is None:
            return {"fc": c.fc_rate, "conv": c.conv_rate,
                    "output": c.output_rate if c.output_rate is not None else None}
        return strategies.layer_rates(c, pruning.layer_kinds(model))

    # -- Keras hooks --------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        pruning.prepare(self.model)
        if self._masks is None:
            kinds = pruning.layer_kinds(self.model)
            strategies.layer_rates(self.config, kinds)  # a layer_rates name of no layer: one line, before training
            strategies.check_tied_rates(self.config, kinds, self.units(self.model))
            self._masks = pruning.get_masks(self.model)
            self.initial_weights = pruning.snapshot(self.model)
            if self.config.rewind_step == 0:
                self.rewind_weights = self.initial_weights
        elif self._round_done:
            self.next_round()
        else:
            self._guard("at the start of fit")
        self._reset_optimizer()

    def _implements_train_batch_hooks(self):
        return self.rewind_weights is None and self.config.rewind_step > 0

    def on_train_batch_end(self, batch, logs=None):
        if self.rewind_weights is None and int(self.model.optimizer.iterations.numpy()) == self.config.rewind_step:
            self.rewind_weights = pruning.snapshot(self.model)

    def on_epoch_end(self, epoch, logs=None):
        self._guard(f"after epoch {epoch}")

    def on_train_end(self, logs=None):
        self._guard("at the end of fit")
        self.trained_weights = pruning.snapshot(self.model)
        if self.level == 0:
            self.dense_kernels = pruning.get_kernels(self.model)
        self._round_done = True

    # -- pruning and rewinding ------------------------------------------------------------------
    def next_masks(self) -> dict[str, np.ndarray]:
        """The next level's masks from the model's current (trained) kernels: the pure pruning function."""
        kernels, current = pruning.get_kernels(self.model), self._masks
        if self.config.schedule == "one_shot":
            kernels, current = self.dense_kernels or kernels, mask_math.ones_like(kernels)
        kinds = pruning.layer_kinds(self.model)
        sizes = {name: int(np.size(kernel)) for name, kernel in kernels.items()}
        shapes = {name: tuple(np.shape(kernel)) for name, kernel in kernels.items()}
        units = self.units(self.model)
        emptied = strategies.first_emptied(self.config, kinds, sizes, self.level + 2, shapes, units)
        if emptied is not None and not self.config.keep_one_weight:
            raise ValueError(emptied.message())
        inputs = strategies.PruneInputs(
            kinds=kinds, kernels=kernels, masks=current, level=self.level + 1,
            seed=branches.stage_seed(self.seed, self.level + 1, branches.MAIN), units=units,
        )
        return strategies.prune(self.config, inputs)

    def units(self, model: keras.Model):
        """The unit graph of `model` for granularity='unit' (traced once per model), else None."""
        if self.config.granularity != "unit":
            return None
        if self._units is None or self._units[0] is not model:
            self._units = (model, unit_graph.trace(model, tuple(pruning.layer_kinds(model))))
        return self._units[1]

    def next_round(self) -> dict[str, np.ndarray]:
        """Prune to the next level and reset the survivors to the rewind point; return the new masks."""
        if self.rewind_weights is None:
            raise ValueError(
                f"rewind_step={self.config.rewind_step} was never reached: training ended at iteration "
                f"{int(self.model.optimizer.iterations.numpy())}; allowed: 0 <= rewind_step < iterations"
            )
        self._guard("before pruning")
        masks = self.next_masks()
        pruning.set_masks(self.model, masks)
        pruning.restore(self.model, self.rewind_weights)
        self._masks, self.level, self._round_done = masks, self.level + 1, False
        return masks

    def _guard(self, when: str) -> None:
        """Re-impose tf_lottery's masks if something restored other ones (one warning line)."""
        if self._masks is None or self.model is None:
            return
        current = pruning.get_masks(self.model)
        changed = [n for n, m in self._masks.items() if not np.array_equal(current[n], m)]
        leaked = pruning.count_pruned_nonzero(self.model) if not changed else 0
        if changed or leaked:
            pruning.set_masks(self.model, self._masks)
            what = f"the masks of {', '.join(changed)}" if changed else f"{leaked} pruned weights"
            warnings.warn(
                f"tf_lottery: {what} changed outside the lottery callback {when} (a weight restore such as "
                f"load_weights or restore_best_weights?); re-imposed round {self.level}'s masks",
                RuntimeWarning, stacklevel=2,
            )

    def _reset_optimizer(self) -> None:
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is None:
            return
        if optimizer is not self._optimizer:
            _build_optimizer(optimizer, self.model.trainable_variables)
            self._optimizer, self._used_in_round = optimizer, self.level
            self._optimizer_start = [np.array(v.numpy()) for v in _optimizer_variables(optimizer)]
            return
        if self.reset_optimizer and self._used_in_round != self.level:
            variables = _optimizer_variables(optimizer)
            if len(variables) == len(self._optimizer_start):
                for variable, value in zip(variables, self._optimizer_start):
                    variable.assign(value)
            if self.level > 0 and self.config.rewind_step > 0:
                optimizer.iterations.assign(self.config.rewind_step)  # the schedule resumes at k, like the weights
            self._used_in_round = self.level

    # -- controls -------------------------------------------------------------------------------
    def apply_control(self, name: str, model: keras.Model, seed: Optional[int] = None) -> None:
        """Set `model` (same architecture, wrapped) to control `name`'s start for the current level
        (with the callback's seed unless `seed` is given)."""
        seed = self.seed if seed is None else seed
        if self._masks is None or self.rewind_weights is None:
            raise ValueError("no round has started yet; call apply_control after the first fit")
        branch = branches.get(name)
        masks, weights = branch.start(branches.BranchInputs(
            self._masks, self.rewind_weights, model, branches.stage_seed(seed, self.level, name),
            self.config.granularity, pruning.layer_kinds(model), self.units(model)))
        pruning.set_masks(model, dict(masks))
        pruning.restore(model, weights)
