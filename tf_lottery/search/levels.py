"""The level loop of one search: for each level, prune (or read the mask), train the ticket, train its branches.

`tf_lottery.search.find.find_ticket` sets a search up and runs this loop. The run directory is the only state between stages
(a temporary one when no `output_dir` is given), as in open_lth's level loop: each step begins
with "already on disk: use it", so a rerun resumes where it stopped, and a network cut off
mid-way continues from its checkpoint (`training.train_stage`). Pruning is a pure function of the
pruning config and the previous level's trained kernels (`tf_lottery.strategies.prune`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_lottery import branches, strategies
from tf_lottery.config import ExperimentConfig
from tf_lottery.files import load_json
from tf_lottery.masking import granularity as granular
from tf_lottery.masking import masks as mask_math
from tf_lottery.masking import pruning
from tf_lottery.search import checkpoints, training
from tf_lottery.search import run_directory as rundir
from tf_lottery.search.run_directory import CorruptRunError, RunDirectory

SCORE_BATCH_COUNT = 4  # batches a data-dependent score reads (240 examples at the paper's batch of 60)

MAIN = branches.MAIN


def format_round(row: dict) -> str:
    """The line printed for each finished round."""
    line = (
        f"round {row['round']:2d} | weights remaining {100 * row['weights_remaining']:6.2f}% | "
        f"test acc {row['test_accuracy']:.4f} | early stop it {row['early_stop_iteration']:6d} "
        f"(acc {row['early_stop_test_accuracy']:.4f}) | {row['seconds']:6.1f} s"
    )
    for name, metrics in row.get("controls", {}).items():
        line += f" | {name} {metrics['early_stop_test_accuracy']:.4f} @ {metrics['early_stop_iteration']}"
    return line


def _write_tensorboard(run: RunDirectory, round_index: int, stage: str, result: dict) -> None:
    """Evaluation curves of one trained network (tensorboard --logdir <run>/tensorboard)."""
    writer = tf.summary.create_file_writer(run.tensorboard_dir(f"round_{round_index:02d}_{stage}"))
    with writer.as_default():
        for e in result["history"]:
            for key in ("validation_loss", "test_accuracy", "train_loss"):
                tf.summary.scalar(key, e[key], step=e["iteration"])
    writer.close()


@dataclasses.dataclass
class Search:
    """One ticket search: the wrapped model, what it trains on, and its run directory."""

    model: keras.Model
    config: ExperimentConfig
    inputs: object
    run: RunDirectory
    strategy: tf.distribute.Strategy
    objective: training.Objective
    callbacks: Sequence = ()
    log: Callable[[str], None] = print
    progress: object = None

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
            from tf_lottery.masking import unit_graph  # Keras-aware; only unit pruning needs it

            self.units = unit_graph.trace(self.model, tuple(self.kinds), granularity=self.granularity)
        # The last level that prunes anything: the levels after it would train the same counts again.
        self.last_level = strategies.last_changing_level(self.config.pruning, self.kinds, self.sizes,
                                                         self.config.pruning.rounds, self.shapes, self.units)

    def check_levels(self) -> None:
        """Refuse, before anything is written, a search whose rounds would leave a layer no weight."""
        pruning_config = self.config.pruning
        emptied = strategies.first_emptied(pruning_config, self.kinds, self.sizes, pruning_config.rounds,
                                           self.shapes, self.units)
        if emptied is not None and not pruning_config.keep_one_weight:
            raise ValueError(emptied.message(pruning_config.rounds))
        if self.granularity == "m_by_n":
            keep = strategies.keep_fractions(pruning_config, self.kinds, 1)
            dense = granular.m_by_n_dense_layers(self.shapes, keep)
            if dense:
                self.log(f"granularity='m_by_n': {', '.join(dense)} stay dense (2:4 needs an input dimension "
                         "that is a multiple of 4)")
        warning = strategies.scope_warning(pruning_config)
        if warning:
            self.log(warning)
        if (strategies.get(pruning_config.pruning_strategy).needs_data and pruning_config.score_batches == "balanced"
                and not getattr(self.inputs, "can_balance", True)):
            self.log(f"warning: score_batches=balanced with a tf.data pipeline: {pruning_config.pruning_strategy} "
                     f"scores its first {SCORE_BATCH_COUNT} batches (pass NumPy arrays for class-balanced ones)")

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
    def stage_iterations(self, level: int, stage: str) -> int:
        """Round 0 trains T iterations from theta_0. Every later network (the ticket, however it is
        retrained, and each control) starts at iteration k = rewind_step and trains the T - k left, the
        schedule continuing from k, as open_lth and Renda et al. (2020) do; k = 0 trains T from theta_0."""
        if level == 0 and stage == MAIN:
            return self.total
        return self.total - self.config.pruning.rewind_step

    def schedule_start(self, level: int, stage: str) -> int:
        """The schedule's iteration where a network's training begins (fine-tuning holds the final rate)."""
        if level == 0 and stage == MAIN:
            return 0
        if stage == MAIN and self.config.pruning.retrain == "finetune":
            return self.total
        return self.config.pruning.rewind_step

    def initial_weights(self) -> list[np.ndarray]:
        saved = self.run.load_weights("initial.npz", self.weight_shapes)
        if saved is None:
            saved = pruning.snapshot(self.model)
            self.run.save_weights("initial.npz", saved)
        return saved

    def rewind_weights(self) -> list[np.ndarray]:
        if self.config.pruning.rewind_step == 0:
            return self.initial_weights()
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
            pruning.restore(self.model, self.initial_weights())
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

    # -- training -------------------------------------------------------------------------------
    def start_weights(self, level: int) -> list[np.ndarray]:
        if level == 0:
            return self.initial_weights()
        if self.config.pruning.retrain == "weight_rewind":
            return self.rewind_weights()
        pruning.set_masks(self.model, self.load_masks(level - 1) if level > 1 else self.dense_masks())
        checkpoints.restore_round(self.run, level - 1, self.model)
        return pruning.snapshot(self.model)  # LR rewinding and fine-tuning keep the trained weights

    def train(self, level: int, name: str, masks: dict, weights: list[np.ndarray], capture=None) -> dict:
        pruning.set_masks(self.model, masks)
        pruning.restore(self.model, weights)
        retrain = self.config.pruning.retrain if (name == MAIN and level > 0) else "weight_rewind"
        stage = training.Stage(
            round=level, name=name, seed=branches.stage_seed(self.config.runtime.seed, level, name),
            iterations=self.stage_iterations(level, name),
            schedule_offset=self.schedule_start(level, name),
            hold_schedule=retrain == "finetune",
        )
        result = training.train_stage(
            self.model, stage, self.config.training, self.inputs, self.objective, self.strategy, self.run,
            self.progress, self.callbacks, capture, self.log,
        )
        result["weights_remaining"] = mask_math.weights_remaining(masks)
        result["layers"] = mask_math.layer_weights_remaining(masks)
        result["all_weights_remaining"] = pruning.weights_remaining_all(self.model, masks)
        if self.config.pruning.rewind_step and not (level == 0 and name == MAIN):
            result["schedule_start"] = stage.schedule_offset  # marks the T - k rule (runs before it lack it)
        return result

    def train_ticket(self, level: int, masks: dict) -> bool:
        """Train the ticket of `level` unless it is on disk; True when it trained."""
        if self.run.load_stage(level, MAIN, self.stage_iterations(level, MAIN)) is not None:
            return False
        capture = None
        k = self.config.pruning.rewind_step
        if level == 0 and k > 0:
            capture = training.CaptureAt(k, lambda model: self.run.save_weights("rewind.npz", pruning.snapshot(model)))
        result = self.train(level, MAIN, masks, self.start_weights(level), capture)
        checkpoints.save_round(self.run, level, self.model)
        if level == 0:
            self.run.save_dense_kernels(pruning.get_kernels(self.model))
            self.rewind_weights()  # rewind_step < iterations, so it was recorded; refuse otherwise
        self.run.save_stage(level, MAIN, result)
        self.run.clear_progress()
        _write_tensorboard(self.run, level, MAIN, result)
        return True

    def branch_inputs(self, masks: dict, weights: list[np.ndarray], seed: int, level: int) -> branches.BranchInputs:
        """What a control starts from: the ticket's masks and rewind weights, this search's granularity,
        and the level pruned by the lowest scores (computed only if the control asks)."""
        def inverted() -> dict:
            return strategies.prune(self.config.pruning, self.prune_inputs(level), invert=True)

        return branches.BranchInputs(masks, weights, self.model, seed, self.granularity, self.kinds, self.units,
                                     inverted=inverted)

    def train_branch(self, level: int, name: str, masks: dict) -> bool:
        if self.run.load_stage(level, name, self.stage_iterations(level, name)) is not None:
            return False
        branch = branches.get(name)
        seed = branches.stage_seed(self.config.runtime.seed, level, name)
        start_masks, weights = branch.start(self.branch_inputs(masks, self.rewind_weights(), seed, level))
        result = self.train(level, name, dict(start_masks), weights)
        self.run.save_stage(level, name, result)
        self.run.clear_progress()
        _write_tensorboard(self.run, level, name, result)
        return True

    # -- the level loop -------------------------------------------------------------------------
    def rows(self) -> list[dict]:
        """The summary rows of every finished round, read from the round files."""
        out = []
        for level in range(self.config.pruning.rounds):
            main = self.run.load_stage(level, MAIN, self.stage_iterations(level, MAIN))
            if main is None:
                break
            controls = {}
            for name in self.config.pruning.controls if level > 0 else ():
                result = self.run.load_stage(level, name, self.stage_iterations(level, name))
                if result is not None:
                    controls[name] = result
            out.append(rundir.stage_row(level, main, controls))
        return out

    def write_summary(self, record: dict) -> list[dict]:
        rows = self.rows()
        path = self.run.file("summary.json")
        wanted = rundir.summary_of(record, rows)
        current = None
        if os.path.isfile(path):
            with contextlib.suppress(ValueError, OSError):
                current = rundir.load_json(path)
        if current != json.loads(json.dumps(wanted)) or not os.path.isfile(self.run.file("rounds.csv")):
            self.run.write_summary(record, rows)  # a resumed run rewrites nothing it already has
        return rows

    def search(self, record: dict) -> list[dict]:
        """Train every level up to the last that prunes anything; say so in one line when that ends it early."""
        rows: list[dict] = []
        stop = self.stop()
        if stop is not None:
            record = dict(record, stop=stop)
        for level in range(self.last_level + 1):
            masks = self.masks(level)
            trained = self.train_ticket(level, masks)
            for name in self.config.pruning.controls if level > 0 else ():
                trained = self.train_branch(level, name, masks) or trained
            if trained or level == self.last_level:
                rows = self.write_summary(record)  # a pure resume pass rewrites nothing on its way
            else:
                rows = self.rows()
            if level < len(rows):
                if trained:
                    _write_tensorboard_round(self.run, rows[level])
                self.log(format_round(rows[level]))
        if stop is not None:
            self.log(f"stopped after round {stop['after_round']} of {self.config.pruning.rounds}: {stop['reason']}")
        return rows

    # -- reading everything before writing anything ---------------------------------------------
    def check_rewind_rule(self, level: int, name: str) -> None:
        """Refuse a network trained under the rule before 0.3: rewound to k > 0, it trained all T iterations
        with the schedule restarted at 0 (LR rewinding and fine-tuning of the ticket already trained T - k)."""
        k = self.config.pruning.rewind_step
        if not k or (level == 0 and name == MAIN) or not os.path.lexists(self.run.stage_file(level, name)):
            return
        if name == MAIN and self.config.pruning.retrain != "weight_rewind":
            return
        result = load_json(self.run.stage_file(level, name))
        # The old rule's mark: all T iterations and no schedule_start (anything else is checked as a stage result).
        if isinstance(result, dict) and "schedule_start" not in result and result.get("iterations") == self.total:
            raise ValueError(
                f"output_dir {self.run.path} was trained by an earlier tf_lottery, whose networks rewound to "
                f"rewind_step={k} trained all {self.total} iterations with the schedule restarted at 0; today they "
                f"train the {self.total - k} left from iteration {k} (open_lth, Renda et al. 2020), and the two cannot "
                "be mixed in one search: use another output_dir")

    def verify(self) -> None:
        """Read every file a resume depends on: a damaged one is one error line, and nothing is written."""
        run = self.run
        run.check_no_links()
        for name in ("initial.npz", "rewind.npz"):
            run.load_weights(name, self.weight_shapes)
        run.load_dense_kernels(self.shapes)
        for level in run.rounds_on_disk():
            self.load_masks(level)
            for name in (MAIN,) + tuple(self.config.pruning.controls):
                self.check_rewind_rule(level, name)
                run.load_stage(level, name, self.stage_iterations(level, name))
            if os.path.lexists(run.checkpoint_dir(level)):
                checkpoints.check_readable(run.checkpoint_prefix(level), f"delete {run.round_dir(level)} to retrain round {level}")
        state = run.load_progress(max(self.total, 2))
        if state is not None:
            fix = f"delete {run.progress_dir} to restart that network from its beginning"
            checkpoints.check_readable(run.progress_prefix, fix)
            step = checkpoints.progress_step(run.progress_prefix)
            if step != state["iteration"]:
                raise CorruptRunError(f"{run.progress_dir}/state.json says iteration {state['iteration']} but its "
                                      f"checkpoint holds iteration {step}; {fix}")
        if self.config.pruning.rewind_step > 0 and os.path.lexists(run.stage_file(0, MAIN)):
            self.rewind_weights()  # a finished round 0 must have recorded its rewind point


def _write_tensorboard_round(run: RunDirectory, row: dict) -> None:
    """The per-round scalars of the ticket and each control."""
    writer = tf.summary.create_file_writer(run.tensorboard_dir("rounds"))
    with writer.as_default():
        for key in ("weights_remaining", "test_accuracy", "early_stop_iteration", "early_stop_test_accuracy"):
            tf.summary.scalar(key, float(row[key]), step=row["round"])
        for control, metrics in row.get("controls", {}).items():
            for key in ("test_accuracy", "early_stop_iteration", "early_stop_test_accuracy"):
                tf.summary.scalar(f"{control}/{key}", float(metrics[key]), step=row["round"])
    writer.close()
