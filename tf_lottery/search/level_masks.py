"""What mask each level of a search trains under, and the weights it starts from.

A level's mask is read back from the run directory (checked: 0/1 values, shapes, survivors per layer
or per pool, granularity, and no weight revived that the previous level pruned), or pruned now by
`tf_lottery.strategies.prune` (a pure function of the pruning config and the previous level's
trained kernels) and saved. `levels.Search` trains the networks of each level on these.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_lottery import branches, strategies
from tf_lottery.config import ExperimentConfig
from tf_lottery.masking import granularity as granular
from tf_lottery.masking import masks as mask_math
from tf_lottery.masking import pruning, unit_graph
from tf_lottery.search import checkpoints, training
from tf_lottery.search.run_directory import CorruptRunError, RunDirectory

SCORE_BATCH_COUNT = 4  # batches a data-dependent score reads (240 examples at the paper's batch of 60)

MAIN = branches.MAIN


@dataclasses.dataclass
class LevelMasks:
    """The masks and starting weights of a search's levels: its model, data, objective and run directory."""

    model: keras.Model
    config: ExperimentConfig
    inputs: object
    run: RunDirectory
    strategy: tf.distribute.Strategy
    objective: training.Objective

    def __post_init__(self):
        self.total = self.inputs.total_iterations(self.config.training)
        self.kinds = pruning.layer_kinds(self.model)
        self.shapes = pruning.kernel_shapes(self.model)
        self.weight_shapes = pruning.shapes(self.model)
        self.sizes = {n: int(np.prod(s)) for n, s in self.shapes.items()}
        self.granularity = self.config.pruning.granularity
        # Which units feed which layers (granularity='unit'): traced once; a graph that cannot be
        # pruned by units is refused here, in one line, before the run directory is touched.
        self.units = None
        if self.granularity == "unit":
            self.units = unit_graph.trace(self.model, tuple(self.kinds), granularity=self.granularity)
        strategies.layer_rates(self.config.pruning, self.kinds)  # a layer_rates name of no layer: one line, now
        strategies.check_tied_rates(self.config.pruning, self.kinds, self.units)
        # The last level that prunes anything: the levels after it would train the same counts again.
        self.last_level = strategies.last_changing_level(self.config.pruning, self.kinds, self.sizes,
                                                         self.config.pruning.rounds, self.shapes, self.units)

    def stop(self) -> Optional[dict]:
        """{"after_round", "reason"} when the search ends before its last round because the rest prune nothing."""
        rounds = self.config.pruning.rounds
        if self.last_level >= rounds - 1:
            return None
        if self.granularity == "m_by_n":
            why = "2:4 is reached at round 1 and stays"
        elif self.granularity != "weight":
            counts = strategies.granular_counts(self.config.pruning, self.kinds, self.shapes, self.last_level, self.units)
            word = strategies.counted(self.config.pruning).split(" ")[0]
            if all(count == 1 for count in counts.values()):
                why = f"every layer is down to its one kept {word[:-1]}"
            else:
                why = f"the rates round every layer to the {word} it already has"
        else:
            counts = self.counts(self.last_level)
            if "pool" not in counts and all(count == 1 for count in counts["layers"].values()):
                why = "every layer is down to its one kept weight"
            else:
                why = "the rates round every layer to the weights it already has"
        later = f"round {self.last_level + 1}" + (" and later" if self.last_level + 2 < rounds else "")
        return {"after_round": self.last_level, "reason": f"{later} would prune nothing ({why})"}

    # -- what is on disk ------------------------------------------------------------------------
    def theta_0(self) -> list[np.ndarray]:
        """Every parameter before training (initial.npz, written the first time it is asked for)."""
        saved = self.run.load_weights("initial.npz", self.weight_shapes)
        if saved is None:
            saved = pruning.snapshot(self.model)
            self.run.save_weights("initial.npz", saved)
        return saved

    def rewind_weights(self) -> list[np.ndarray]:
        """The point survivors are reset to: theta_0, or the dense network at iteration rewind_step (rewind.npz)."""
        if self.config.pruning.rewind_step == 0:
            return self.theta_0()
        saved = self.run.load_weights("rewind.npz", self.weight_shapes)
        if saved is None:
            raise CorruptRunError(
                f"{self.run.file('rewind.npz')} (the weights at iteration {self.config.pruning.rewind_step} of round 0) "
                f"is missing; delete {self.run.stage_file(0, MAIN)} to retrain round 0 and record it again"
            )
        return saved

    def dense_masks(self) -> dict:
        return {name: np.ones(shape, np.float32) for name, shape in self.shapes.items()}

    def counts(self, level: int):
        return strategies.expected_counts(self.config.pruning, self.kinds, self.sizes, level)

    def load_masks(self, level: int) -> Optional[dict]:
        """Round `level`'s mask, checked: 0/1 values, shapes, survivors per layer (or per pool), and no
        weight revived that the previous level pruned (iterative magnitude-style pruning only)."""
        structured = self.granularity != "weight"
        counts = self.counts(level)
        masks = self.run.load_masks(level, self.shapes, counts["layers"] if "pool" not in counts and not structured else None)
        if masks is None:
            return None
        path = self.run.masks_file(level)
        if structured:
            keep = strategies.keep_fractions(self.config.pruning, self.kinds, level)
            problem = granular.check(self.granularity, masks, keep, self.kinds, self.units)
            if problem is not None:
                raise CorruptRunError(f"{path}: {problem} (granularity={self.granularity!r}); delete it to recompute")
        nested = self.config.pruning.schedule == "iterative" and not strategies.get(self.config.pruning.pruning_strategy).at_init
        if level > 1 and nested:
            previous = self.run.load_masks(level - 1, self.shapes)  # itself checked when its level is read
            if previous is not None and not mask_math.is_subset(masks, previous):
                raise CorruptRunError(f"{path} keeps weights that round {level - 1} pruned; delete it to recompute")
        if "pool" not in counts:
            return masks
        layers = counts["layers"]
        for name, count in layers.items():
            if int(np.count_nonzero(masks[name])) != count:
                raise CorruptRunError(f"{path} keeps {int(np.count_nonzero(masks[name]))} weights of layer {name!r}, the config gives {count}; delete it to recompute")
        pooled = sum(int(np.count_nonzero(masks[n])) for n in counts["pool"])
        low, high = counts["pool_range"]
        if not low <= pooled <= high:
            raise CorruptRunError(f"{path} keeps {pooled} weights in the pruning pool, the config gives {low}; delete it to recompute")
        return masks

    def masks(self, level: int) -> dict:
        """The mask trained at `level`: dense at 0; else read back, or pruned now and saved."""
        saved = self.load_masks(level)
        if saved is not None:
            return saved
        masks = self.dense_masks() if level == 0 else strategies.prune(self.config.pruning, self.prune_inputs(level))
        self.run.save_masks(level, masks)
        return masks

    def prune_inputs(self, level: int) -> strategies.PruneInputs:
        strategy = strategies.get(self.config.pruning.pruning_strategy)
        ones = self.dense_masks()
        if strategy.at_init:
            pruning.set_masks(self.model, ones)
            pruning.restore(self.model, self.theta_0())
            kernels, current = pruning.get_kernels(self.model), ones
        elif self.config.pruning.schedule == "one_shot":
            kernels, current = self.dense_kernels(), ones
        else:
            current = self.load_masks(level - 1) if level > 1 else ones
            pruning.set_masks(self.model, current)
            checkpoints.restore_round(self.run, level - 1, self.model)
            kernels = pruning.get_kernels(self.model)
        batches = self.score_batches() if strategy.needs_data else None
        return strategies.PruneInputs(
            kinds=self.kinds, kernels=kernels, masks=current, level=level,
            seed=branches.stage_seed(self.config.runtime.seed, level, MAIN),
            model=self.model, batches=batches, loss=self.objective.loss, units=self.units,
        )

    def score_batches(self) -> list:
        """The batches a data-dependent score reads: 4 of the run's batch size, class-balanced from the
        run's seed (`score_batches='balanced'`) or seed 0's first four (runs before 0.3); the same at
        every level, so the levels are scored on the same examples."""
        balanced = self.config.pruning.score_batches == "balanced"
        return self.inputs.sample(SCORE_BATCH_COUNT, seed=self.config.runtime.seed, balanced=balanced)

    def dense_kernels(self) -> dict:
        saved = self.run.load_dense_kernels(self.shapes)
        if saved is None:
            pruning.set_masks(self.model, self.dense_masks())
            checkpoints.restore_round(self.run, 0, self.model)
            saved = pruning.get_kernels(self.model)
        return saved
