"""The IMP driver: train, prune, rewind, repeat; with controls, resumption and the Python API.

`find_ticket` is the public entry point. A search is a sequence of stages: for each round r
the ticket itself ('main') and then each control. Every finished stage is written to the run
directory, so a rerun skips it; a stage cut off mid-way restarts from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Callable, Optional, Sequence, Union

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_lottery import config as config_lib
from tf_lottery import masks as mask_math
from tf_lottery import distribute, pruning, training
from tf_lottery.callbacks import LotteryCallback
from tf_lottery.config import ExperimentConfig
from tf_lottery.experiment import CorruptRunError, RunDirectory

ModelSource = Union[keras.Model, Callable[..., keras.Model], None]


@dataclasses.dataclass
class Ticket:
    """The result of a search: the sparsest ticket's masks, its rewind weights, and every round's metrics."""

    masks: dict[str, np.ndarray]
    initial_weights: list[np.ndarray]
    rounds: list[dict]
    round_masks: list[dict[str, np.ndarray]]
    model: keras.Model
    output_dir: Optional[str] = None

    @property
    def weights_remaining(self) -> float:
        return mask_math.weights_remaining(self.masks)

    def best_round(self, metric: str = "early_stop_test_accuracy") -> dict:
        """The round with the highest `metric` (ties: the sparser round)."""
        return max(self.rounds, key=lambda r: (r[metric], r["round"]))


@dataclasses.dataclass
class _Data:
    """Training batches from iteration i on, plus exact validation and test sets."""

    train_from: Callable[[int, int], tf.data.Dataset]  # (seed, start_iteration) -> batches
    validation: Optional[tf.data.Dataset]
    test: tf.data.Dataset
    num_train: int
    input_shape: tuple
    num_classes: int
    name: str


def _data_from_splits(splits, batch_size: int) -> _Data:
    def train_from(seed, start):
        return training.train_batches(splits.train_images, splits.train_labels, batch_size, seed, start)

    if len(splits.train_images) == 0:
        raise ValueError("the training set is empty; allowed: at least one example")
    if len(splits.test_images) == 0:
        raise ValueError("the test set is empty; allowed: at least one example")
    validation = None
    if len(splits.validation_images):
        validation = training.eval_batches(splits.validation_images, splits.validation_labels)
    return _Data(
        train_from=train_from,
        validation=validation,
        test=training.eval_batches(splits.test_images, splits.test_labels),
        num_train=len(splits.train_images),
        input_shape=tuple(splits.train_images.shape[1:]),
        num_classes=int(splits.num_classes),
        name=getattr(splits, "source", "arrays"),
    )


def _data_from_datasets(train, validation, test) -> _Data:
    """The user's own tf.data pipelines (batched). Their order is theirs: resumption replays it."""
    if test is None:
        raise ValueError("pass a test dataset (test=...) together with train=...")
    cardinality = int(train.cardinality().numpy())
    if cardinality == 0:
        raise ValueError("the training dataset is empty; allowed: at least one batch")
    spec = train.element_spec[0]
    return _Data(
        train_from=lambda seed, start: train.repeat(),
        validation=validation,
        test=test,
        num_train=cardinality if cardinality > 0 else 0,
        input_shape=tuple(spec.shape[1:]),
        num_classes=0,
        name="user datasets",
    )


def _shard_by_example(data: _Data) -> _Data:
    """Multi-worker: each worker reads the same global batches and keeps its share (exact evaluation)."""
    shard = distribute.shard_by_data
    return dataclasses.replace(
        data,
        train_from=lambda seed, start: shard(data.train_from(seed, start)),
        validation=shard(data.validation) if data.validation is not None else None,
        test=shard(data.test),
    )


def _build_model(source: ModelSource, config: ExperimentConfig, data: _Data) -> keras.Model:
    if isinstance(source, keras.Model) or hasattr(source, "layers"):
        # Any model object (a Keras 3 one too) goes to check_keras_model, which explains a refusal.
        return source
    if source is not None:
        try:
            return source(seed=config.runtime.seed)
        except TypeError:
            return source()
    import tf_lottery_models as zoo

    build = zoo.get_builder(config.model.name)
    return build(
        data.input_shape,
        num_classes=data.num_classes or 10,
        dropout_rate=config.model.dropout_rate,
        seed=config.runtime.seed,
    )


def _check_input_shape(model: keras.Model, data: _Data, dataset: str) -> None:
    expected = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    if expected is None:
        return
    got = data.input_shape
    if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got)):
        raise ValueError(
            f"dataset {dataset!r} has inputs of shape {got} but model {model.name!r} takes {expected}"
        )


def _stage_seed(seed: int, round_index: int, stage: str) -> int:
    offset = {"main": 0, "random_reinit": 1, "random_prune": 2}[stage]
    return (seed * 1009 + round_index * 10 + offset) % (2**31 - 1)


def _format_round(row: dict) -> str:
    line = (
        f"round {row['round']:2d} | weights remaining {100 * row['weights_remaining']:6.2f}% | "
        f"test acc {row['test_accuracy']:.4f} | early stop it {row['early_stop_iteration']:6d} "
        f"(acc {row['early_stop_test_accuracy']:.4f}) | {row['seconds']:6.1f} s"
    )
    for name, metrics in row.get("controls", {}).items():
        line += f" | {name} {metrics['early_stop_test_accuracy']:.4f} @ {metrics['early_stop_iteration']}"
    return line


def _write_tensorboard(run: Optional[RunDirectory], round_index: int, stage: str, result: dict, row: Optional[dict]) -> None:
    if run is None or not run.writable:
        return
    writer = tf.summary.create_file_writer(run.file("tensorboard", f"round_{round_index:02d}_{stage}"))
    with writer.as_default():
        for e in result["history"]:
            tf.summary.scalar("validation_loss", e["validation_loss"], step=e["iteration"])
            tf.summary.scalar("test_accuracy", e["test_accuracy"], step=e["iteration"])
            tf.summary.scalar("train_loss", e["train_loss"], step=e["iteration"])
    writer.close()
    if row is not None:
        writer = tf.summary.create_file_writer(run.file("tensorboard", "rounds"))
        with writer.as_default():
            for key in ("weights_remaining", "test_accuracy", "early_stop_iteration", "early_stop_test_accuracy"):
                tf.summary.scalar(key, float(row[key]), step=round_index)
            for control, metrics in row.get("controls", {}).items():
                for key in ("test_accuracy", "early_stop_iteration", "early_stop_test_accuracy"):
                    tf.summary.scalar(f"{control}/{key}", float(metrics[key]), step=round_index)
        writer.close()


class _Search:
    """One ticket search in progress; `run()` drives it round by round."""

    def __init__(self, model, config, data, run, strategy, callbacks, log, progress=None):
        self.config, self.data, self.run_dir = config, data, run
        self.strategy, self.user_callbacks, self.log = strategy, list(callbacks), log
        self.progress = progress
        self.model = model
        p = config.pruning
        self.lottery = LotteryCallback(
            fc_rate=p.fc_rate,
            conv_rate=p.conv_rate,
            output_rate=p.output_rate,
            scope=p.scope,
            schedule=p.schedule,
            rewind_step=p.rewind_step,
            prune_at_train_end=False,
        )
        self.lottery.set_model(model)
        self.total_iterations = config.training.total_iterations(data.num_train)
        self.rows: list[dict] = []
        self.round_masks: list[dict] = []

    # -- state that must survive a crash ----------------------------------------------------
    def _initial_weights(self) -> list[np.ndarray]:
        run = self.run_dir
        saved = run.load_weights("initial.npz") if run else None
        if saved is not None:
            pruning.restore(self.model, saved)
            return saved
        values = pruning.snapshot(self.model)
        if run:
            run.save_weights("initial.npz", values)
        return values

    def _save_rewind(self) -> None:
        """Persist a rewind point recorded at rewind_step > 0 (theta_0 is initial.npz already)."""
        run = self.run_dir
        if run and not self._rewind_saved and self.lottery.rewind_weights is not None:
            run.save_weights("rewind.npz", self.lottery.rewind_weights)
            self._rewind_saved = True

    # -- one stage ----------------------------------------------------------------------------
    def _train_stage(self, round_index: int, stage: str, masks, weights) -> dict:
        run = self.run_dir
        done = run.load_stage(round_index, stage) if run else None
        if done is not None:
            return done
        self._trained.add(stage)
        pruning.set_masks(self.model, masks)
        pruning.restore(self.model, weights)
        seed = _stage_seed(self.config.runtime.seed, round_index, stage)
        keras.utils.set_random_seed(seed)
        with self.strategy.scope():
            training.compile_for_round(self.model, self.config.training)
            self.model.optimizer.build(self.model.trainable_variables)
        checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer)
        start, history, previous_seconds = 0, [], 0.0
        started = time.perf_counter()
        progress = run.load_progress() if run else None
        if progress and progress.get("round") == round_index and progress.get("stage") == stage:
            checkpoint.read(run.progress_prefix()).assert_existing_objects_matched()
            start = int(progress["iteration"])
            history = [training.Evaluation(**e) for e in progress["history"]]
            previous_seconds = float(progress.get("seconds", 0.0))
            self.log(f"resuming round {round_index} ({stage}) at iteration {start}")

        last_saved = [start]
        every = self.config.training.checkpoint_every
        if self.progress is not None:
            self.progress.begin(round_index, stage, start, self.total_iterations)

        def on_evaluation(evaluation):
            if self.progress is not None:
                self.progress.update(evaluation)
            if stage == "main":
                self._save_rewind()
            if run and every and evaluation.iteration - last_saved[0] >= every:
                state = {
                    "round": round_index,
                    "stage": stage,
                    "iteration": evaluation.iteration,
                    "history": [dataclasses.asdict(e) for e in history],
                    "seconds": previous_seconds + time.perf_counter() - started,
                }
                run.save_progress(state, checkpoint)
                last_saved[0] = evaluation.iteration

        callbacks = ([self.lottery] if stage == "main" else []) + self.user_callbacks
        result = training.train(
            self.model,
            lambda i: self.data.train_from(seed, i),
            self.data.validation,
            self.data.test,
            total_iterations=self.total_iterations,
            eval_every=self.config.training.eval_every,
            callbacks=callbacks,
            start_iteration=start,
            history=history,
            on_evaluation=on_evaluation,
        )
        if self.progress is not None:
            self.progress.end()
        out = result.metrics()
        out["seconds"] += previous_seconds
        out["history"] = [dataclasses.asdict(e) for e in result.history]
        out["weights_remaining"] = mask_math.weights_remaining(masks)
        out["layers"] = mask_math.layer_weights_remaining(masks)
        return out

    # -- one round ----------------------------------------------------------------------------
    def _round(self, round_index: int, masks) -> tuple[dict, dict, Optional[dict]]:
        """Train (or read back) round `round_index` and its controls: (summary row, main result, next masks)."""
        run = self.run_dir
        last = round_index == self.config.pruning.rounds - 1
        self.lottery.level = round_index
        weights = self.initial if round_index == 0 else self.lottery.rewind_weights
        main_done = run.load_stage(round_index, "main") if run else None
        if main_done is None:
            if run:
                run.save_masks(round_index, "masks.npz", masks)
            main = self._train_stage(round_index, "main", masks, weights)
            if run:
                run.save_checkpoint(round_index, self.model)
            self._save_rewind()
            if self.lottery.rewind_weights is None:
                self.lottery.end_round()  # raises the rewind-step error with the iteration reached
            next_masks = None
            if not last:
                next_masks = self.lottery.end_round()
                if run:
                    if round_index == 0:
                        run.save_dense_kernels(self.lottery.dense_kernels)
                    run.save_masks(round_index, "next_masks.npz", next_masks)
            if run:
                run.save_stage(round_index, "main", main)
                run.clear_progress()
        else:
            main = main_done
            next_masks = None if last else run.load_masks(round_index, "next_masks.npz")
            if next_masks is None and not last:
                # The run was extended (--rounds raised): prune this round's trained weights now.
                pruning.set_masks(self.model, masks)
                run.restore_checkpoint(round_index, self.model)
                next_masks = self.lottery.end_round()
                run.save_masks(round_index, "next_masks.npz", next_masks)
            self.lottery.level = round_index + 1

        row = {k: v for k, v in main.items() if k != "history"}
        row = {"round": round_index, **row, "controls": {}}
        if round_index > 0:
            for control in self.config.pruning.controls:
                row["controls"][control] = self._control(round_index, control, masks)
        return row, main, next_masks

    def _control(self, round_index: int, control: str, masks) -> dict:
        run = self.run_dir
        rewind = self.lottery.rewind_weights
        seed = _stage_seed(self.config.runtime.seed, round_index, control)
        if control == "random_reinit":
            control_masks, weights = masks, pruning.reinitialized(self.model, rewind, seed)
        else:
            control_masks = mask_math.random_masks(masks, np.random.default_rng(seed))
            weights = rewind
        result = self._train_stage(round_index, control, control_masks, weights)
        if run and control in self._trained:
            run.save_stage(round_index, control, result)
            run.clear_progress()
            _write_tensorboard(run, round_index, control, result, None)
        return {k: v for k, v in result.items() if k not in ("history", "layers")}

    def _verify_run_directory(self) -> None:
        """Read every file a resume depends on before writing anything: corruption is one error line."""
        run = self.run_dir
        shapes = [v.shape for v in pruning.snapshot(self.model)]
        for name in ("initial.npz", "rewind.npz"):
            values = run.load_weights(name)
            if values is not None and [v.shape for v in values] != shapes:
                raise CorruptRunError(f"{run.file(name)} holds weights of another model (tensor shapes differ)")
        dense = run.load_dense_kernels()
        if dense is not None:
            self._check_masks(dense, run.file("dense_kernels.npz"))
        for round_index in range(self.config.pruning.rounds):
            if not os.path.isdir(run.round_dir(round_index)):
                continue
            for name in ("masks.npz", "next_masks.npz"):
                loaded = run.load_masks(round_index, name)
                if loaded is not None:
                    self._check_masks(loaded, run.round_file(round_index, name))
            for stage in ("main",) + tuple(self.config.pruning.controls):
                run.load_stage(round_index, stage)
        if run.load_progress() is not None:
            try:
                reader = tf.train.load_checkpoint(run.progress_prefix())
                reader.get_variable_to_shape_map()
            except (tf.errors.OpError, ValueError) as e:
                raise CorruptRunError(
                    f"{run.file('in_progress')} holds a truncated or corrupted checkpoint "
                    f"({type(e).__name__}); delete that folder to restart the interrupted round"
                ) from e

    def run(self) -> Ticket:
        run = self.run_dir
        if run:
            self._verify_run_directory()
        self.initial = self._initial_weights()
        if self.config.pruning.rewind_step == 0:
            self.lottery.rewind_weights = self.initial
        elif run:
            self.lottery.rewind_weights = run.load_weights("rewind.npz")  # None until recorded
        self._rewind_saved = self.lottery.rewind_weights is not None
        if run:
            self.lottery.dense_kernels = run.load_dense_kernels()
        masks = mask_math.ones_like(pruning.get_kernels(self.model))
        summarized = len(run.read_summary()["rounds"]) if run and os.path.exists(run.file("summary.json")) else 0
        for round_index in range(self.config.pruning.rounds):
            saved = run.load_masks(round_index, "masks.npz") if run and round_index > 0 else None
            if saved is not None:
                masks = saved
            self._check_masks(masks)
            self._trained = set()
            row, main, next_masks = self._round(round_index, masks)
            self.rows.append(row)
            self.round_masks.append(masks)
            # A resumed run rewrites nothing it already has: only new stages change the directory.
            if run and (self._trained or round_index >= summarized):
                run.write_summary(self.config, self.rows)
                if "main" in self._trained:
                    _write_tensorboard(run, round_index, "main", main, row)
            self.log(_format_round(row))
            if next_masks is not None:
                masks = next_masks
        # Leave the model holding the sparsest ticket, reset to its rewind point.
        pruning.set_masks(self.model, masks)
        pruning.restore(self.model, self.lottery.rewind_weights)
        return Ticket(
            masks=masks,
            initial_weights=self.lottery.rewind_weights,
            rounds=self.rows,
            round_masks=self.round_masks,
            model=self.model,
            output_dir=run.path if run else None,
        )

    def _check_masks(self, masks, source: str = "mask") -> None:
        kernels = pruning.get_kernels(self.model)
        for name, kernel in kernels.items():
            if name not in masks or masks[name].shape != kernel.shape:
                got = None if name not in masks else masks[name].shape
                raise CorruptRunError(
                    f"{source} does not fit this model: layer {name!r} has kernel shape {kernel.shape}, "
                    f"file has {got}"
                )


def find_ticket(
    model: ModelSource = None,
    config: Optional[ExperimentConfig] = None,
    *,
    splits=None,
    train: Optional[tf.data.Dataset] = None,
    validation: Optional[tf.data.Dataset] = None,
    test: Optional[tf.data.Dataset] = None,
    output_dir: Optional[str] = None,
    strategy: Optional[tf.distribute.Strategy] = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    log: Callable[[str], None] = print,
    progress=None,
) -> Ticket:
    """Find a winning ticket by iterative magnitude pruning.

    `model` is a tf-keras Sequential or functional model, a function building one (called with
    `seed=` if it accepts it), or None for `config.model.name` from the zoo. Data comes from
    `splits` (a `tf_lottery.data.Splits`), from the user's batched `train`/`validation`/`test`
    tf.data datasets, or else from `config.data`. With `output_dir`, every stage is saved and a
    rerun with the same config resumes. `progress` (a `tf_lottery.progress.Progress`) shows
    each stage's training live. Returns the sparsest ticket and all rounds' metrics.

    Under `strategy` (e.g. from `tf_lottery.distribute.get_strategy`) the whole search runs in
    its scope and `config.training.batch_size` is the global batch; in a multi-worker cluster
    only the chief writes `output_dir` and a lost worker raises `distribute.WorkerLostError`.
    """
    config = config_lib.validate(config or ExperimentConfig())
    if config.runtime.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = strategy or tf.distribute.get_strategy()
    if train is not None:
        data = _data_from_datasets(train, validation, test)
        if not config.training.iterations:
            if data.num_train <= 0:
                raise ValueError("set iterations: the training dataset's length is unknown")
            config = dataclasses.replace(
                config,
                training=dataclasses.replace(
                    config.training, iterations=data.num_train * (config.training.epochs or 1)
                ),
            )
    else:
        if splits is None:
            from tf_lottery import data as data_lib

            splits = data_lib.load(
                config.data.dataset, data_dir=config.data.data_dir, validation_size=config.data.validation_size
            )
        if config.data.train_subset:
            n = config.data.train_subset
            splits = dataclasses.replace(splits, train_images=splits.train_images[:n], train_labels=splits.train_labels[:n])
        data = _data_from_splits(splits, config.training.batch_size)
    total = config.training.total_iterations(data.num_train)
    config_lib.check_rewind_step(config, total)
    if train is None:
        distribute.check_batch_size(config.training.batch_size, strategy)
    if distribute.num_workers(strategy) > 1:
        data = _shard_by_example(data)

    with contextlib.ExitStack() as stack:
        # Non-chief workers write into a private temporary copy (removed at the end), never output_dir.
        run = stack.enter_context(distribute.run_directory(output_dir, strategy)) if output_dir else None
        keras.utils.set_random_seed(config.runtime.seed)
        with strategy.scope():
            built = _build_model(model, config, data)
            pruning.check_keras_model(built)
            _check_input_shape(built, data, config.data.dataset if train is None else "train")
            wrapped = pruning.wrap(built)
        if run:
            run.prepare(config)  # only once the model and data are known to fit: bad input writes nothing
        stack.enter_context(distribute.peer_failures(strategy, output_dir))
        ticket = _Search(wrapped, config, data, run, strategy, callbacks, log, progress).run()
    if output_dir:
        ticket.output_dir = os.path.abspath(output_dir)  # where the chief wrote the results
    return ticket
