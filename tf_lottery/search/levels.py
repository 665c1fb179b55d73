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
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from tf_lottery import branches, strategies
from tf_lottery.files import load_json
from tf_lottery.masking import granularity as granular
from tf_lottery.masking import masks as mask_math
from tf_lottery.masking import pruning
from tf_lottery.search import checkpoints, training
from tf_lottery.search import run_directory as rundir
from tf_lottery.search.run_directory import CorruptRunError, RunDirectory
from tf_lottery.search.level_masks import MAIN, SCORE_BATCH_COUNT, LevelMasks  # noqa: F401  (re-exported)


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
class Search(LevelMasks):
    """One ticket search: each level's networks trained on the masks of `LevelMasks`, the summary
    rows, and the checks of a run's files before a resume writes anything."""

    callbacks: Sequence = ()
    log: Callable[[str], None] = print
    progress: object = None

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

    # -- training -------------------------------------------------------------------------------
    def start_weights(self, level: int) -> list[np.ndarray]:
        if level == 0:
            return self.theta_0()
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
