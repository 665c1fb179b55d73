"""Train one network of a ticket search: fresh optimizer, periodic evaluation, early-stop metric, resume.

A network's training runs as Keras `fit` calls whose "epochs" are evaluation periods of
`eval_every` iterations, so evaluation needs no per-batch hook. The training data order is a
pure function of (seed, iteration) (`tf_lottery.data.inputs`), so a network can restart from any
checkpointed iteration and see exactly the batches an uninterrupted run would have seen;
`train_stage` does that itself from the run directory's `in_progress/` checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tensorflow.python.framework import config as tf_config  # is_/disable_op_determinism: see op_determinism
from tensorflow.python.framework import ops  # the gradient registry: see forgetting_traced_gradients

from tf_lottery.config import TrainingConfig
from tf_lottery.errors import UserError
from tf_lottery.masking import pruning
from tf_lottery.search import checkpoints


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite."""


@contextlib.contextmanager
def op_determinism(enabled: bool):
    """TensorFlow's op determinism on for a block (a `deterministic` search), as it was afterwards.

    TensorFlow has one process-wide switch; a search left it on, so a user's later training in the
    same process ran under it unasked (and kernels without a deterministic version, such as XLA's
    MaxPool gradient, refused to run). Left unchanged where it was already on, or `enabled` is False.
    """
    before = tf_config.is_op_determinism_enabled()
    if enabled:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if enabled and not before:
            tf_config.disable_op_determinism()


@dataclasses.dataclass
class Evaluation:
    """Metrics at one evaluation point of a training run."""

    iteration: int
    train_loss: float
    validation_loss: float
    validation_accuracy: float
    test_loss: float
    test_accuracy: float


@dataclasses.dataclass
class TrainResult:
    """What the paper reports for one trained network."""

    iterations: int
    test_accuracy: float
    validation_loss: float
    early_stop_iteration: int
    early_stop_test_accuracy: float
    early_stop_validation_loss: float
    seconds: float
    history: list[Evaluation]

    def metrics(self) -> dict:
        return {
            "test_accuracy": self.test_accuracy,
            "validation_loss": self.validation_loss,
            "early_stop_iteration": self.early_stop_iteration,
            "early_stop_test_accuracy": self.early_stop_test_accuracy,
            "early_stop_validation_loss": self.early_stop_validation_loss,
            "iterations": self.iterations,
            "seconds": self.seconds,
        }


def summarize(history: Sequence[Evaluation], iterations: int, seconds: float) -> TrainResult:
    """The early-stop iteration is the evaluation with minimum validation loss (first one on ties)."""
    if not history:
        raise ValueError("no evaluation was recorded; training ran 0 iterations")
    best = min(history, key=lambda e: (e.validation_loss, e.iteration))
    last = history[-1]
    return TrainResult(
        iterations=iterations,
        test_accuracy=last.test_accuracy,
        validation_loss=last.validation_loss,
        early_stop_iteration=best.iteration,
        early_stop_test_accuracy=best.test_accuracy,
        early_stop_validation_loss=best.validation_loss,
        seconds=seconds,
        history=list(history),
    )


# -- optimizers -----------------------------------------------------------------------------------
class WarmupPiecewise(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0, then the base rate divided by 10 at each boundary (the paper's SGD schedule)."""

    def __init__(self, learning_rate: float, warmup_iterations: int = 0, boundaries: Sequence[int] = ()):
        self.learning_rate = float(learning_rate)
        self.warmup_iterations = int(warmup_iterations)
        self.boundaries = tuple(int(b) for b in boundaries)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        rate = tf.constant(self.learning_rate, tf.float32)
        for boundary in self.boundaries:
            rate = tf.where(step >= boundary, rate / 10.0, rate)
        if self.warmup_iterations:
            rate = rate * tf.minimum(1.0, (step + 1.0) / self.warmup_iterations)
        return rate

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "warmup_iterations": self.warmup_iterations,
            "boundaries": list(self.boundaries),
        }


class Shifted(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule replayed from iteration `offset` (learning-rate rewinding), or held at it (fine-tuning)."""

    def __init__(self, schedule, offset: int, hold: bool = False):
        self.schedule, self.offset, self.hold = schedule, int(offset), bool(hold)

    def __call__(self, step):
        if self.hold:
            return self.schedule(tf.constant(self.offset, tf.int64))
        return self.schedule(tf.cast(step, tf.int64) + self.offset)

    def get_config(self):
        return {"schedule": keras.optimizers.schedules.serialize(self.schedule), "offset": self.offset, "hold": self.hold}


class Movable(keras.optimizers.schedules.LearningRateSchedule):
    """`Shifted` with its offset and hold in variables: one traced train step serves every network.

    The schedule's value at step s is the same as `Shifted(schedule, offset, hold)`'s, so a model
    compiled once can train a network from iteration 0, another replayed from k and a third held at k.
    """

    def __init__(self, schedule):
        self.schedule = schedule
        with tf.init_scope():
            self.offset = tf.Variable(0, dtype=tf.int64, trainable=False, name="schedule_offset")
            self.hold = tf.Variable(False, dtype=tf.bool, trainable=False, name="schedule_hold")

    def move(self, offset: int, hold: bool) -> None:
        self.offset.assign(int(offset))
        self.hold.assign(bool(hold))

    def __call__(self, step):
        step = tf.where(self.hold, tf.constant(0, tf.int64), tf.cast(step, tf.int64))
        return self.schedule(step + self.offset)

    def get_config(self):
        return {"schedule": keras.optimizers.schedules.serialize(self.schedule),
                "offset": int(self.offset.numpy()), "hold": bool(self.hold.numpy())}


# The names of config.OPTIMIZERS, as tf-keras's current (not legacy) optimizer classes.
_OPTIMIZER_CLASSES = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad,
    "adadelta": keras.optimizers.Adadelta,
    "adamax": keras.optimizers.Adamax,
    "nadam": keras.optimizers.Nadam,
    "ftrl": keras.optimizers.Ftrl,
}


def _schedule(config: TrainingConfig):
    if config.warmup_iterations or config.lr_boundaries:
        return WarmupPiecewise(config.learning_rate, config.warmup_iterations, config.lr_boundaries)
    return config.learning_rate


def make_optimizer(config: TrainingConfig, schedule_offset: int = 0, hold_schedule: bool = False,
                   movable: bool = False):
    """A fresh optimizer: no state carries across networks, as in the paper.

    `schedule_offset` replays the learning-rate schedule from that iteration (learning-rate
    rewinding); with `hold_schedule` the rate stays at the schedule's value there (fine-tuning).
    With `movable`, a schedule is wrapped in `Movable` whatever the offset, so that it can be moved later.
    """
    if isinstance(config.optimizer, dict):
        try:
            optimizer = keras.optimizers.deserialize(config.optimizer)
        except (TypeError, ValueError) as e:
            raise ValueError(f"optimizer config {config.optimizer.get('class_name')!r} cannot be built ({e})") from e
        rate = optimizer.learning_rate if not isinstance(optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule) else optimizer._learning_rate  # noqa: SLF001
    else:
        rate = _schedule(config)
        kwargs = {"learning_rate": rate}
        if config.optimizer in ("sgd", "rmsprop") and config.momentum is not None:
            kwargs["momentum"] = config.momentum
        optimizer = _OPTIMIZER_CLASSES[config.optimizer](**kwargs)
    base = rate if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule) else None
    if base is not None and movable:
        schedule = Movable(base)
        schedule.move(schedule_offset, hold_schedule)
        optimizer._learning_rate = optimizer._build_learning_rate(schedule)  # noqa: SLF001
    elif base is not None and (schedule_offset or hold_schedule):
        optimizer._learning_rate = optimizer._build_learning_rate(Shifted(base, schedule_offset, hold_schedule))  # noqa: SLF001
    return optimizer


# -- what a network is trained on ---------------------------------------------------------------
@dataclasses.dataclass
class Objective:
    """The loss and extra metrics every network is compiled with; accuracy is always measured."""

    loss: Any
    metrics: Sequence[Any] = ()

    def compile(self, model: keras.Model, optimizer, jit_compile: bool = False) -> None:
        metrics = ["accuracy"] + [m for m in self.metrics if m not in ("accuracy", "acc")]
        model.compile(optimizer=optimizer, loss=self.loss, metrics=metrics, jit_compile=jit_compile)


def outputs_probabilities(model: keras.Model) -> bool:
    """True when the model's output is a softmax (probabilities), not logits."""
    output = model.outputs[0] if getattr(model, "outputs", None) else None
    layer = getattr(getattr(output, "_keras_history", None), "layer", None) or model.layers[-1]
    while hasattr(layer, "layer") and not isinstance(layer, keras.Model):  # a pruning wrapper
        layer = layer.layer
    if isinstance(layer, keras.layers.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    return activation is keras.activations.softmax or getattr(activation, "__name__", "") == "softmax"


def default_objective(model: keras.Model, one_hot: bool) -> Objective:
    """Cross-entropy on the model's logits, or on its probabilities when it ends in a softmax."""
    from_logits = not outputs_probabilities(model)
    if one_hot:
        return Objective(keras.losses.CategoricalCrossentropy(from_logits=from_logits))
    return Objective(keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits))


# -- one training run ------------------------------------------------------------------------------
class _PeriodicEvaluation(keras.callbacks.Callback):
    """Evaluate validation loss and test accuracy at the end of each evaluation period."""

    def __init__(self, validation, test, history: list, on_evaluation: Optional[Callable] = None):
        super().__init__()
        self.validation, self.test = validation, test
        self.history = history
        self.on_evaluation = on_evaluation

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        train_loss = float(logs.get("loss", float("nan")))
        iteration = int(self.model.optimizer.iterations.numpy())
        if not math.isfinite(train_loss):
            raise TrainingDiverged(
                f"training loss became {train_loss} at iteration {iteration}; "
                "lower the learning rate (or check the data)"
            )
        val = self.model.evaluate(self.validation, verbose=0, return_dict=True)
        test = self.model.evaluate(self.test, verbose=0, return_dict=True)
        evaluation = Evaluation(
            iteration=iteration,
            train_loss=train_loss,
            validation_loss=float(val["loss"]),
            validation_accuracy=float(val["accuracy"]),
            test_loss=float(test["loss"]),
            test_accuracy=float(test["accuracy"]),
        )
        self.history.append(evaluation)
        if self.on_evaluation is not None:
            self.on_evaluation(evaluation)


class CaptureAt(keras.callbacks.Callback):
    """Call `fn(model)` right after training step `iteration` (the rewind point), then stop listening.

    `iteration` may also be several steps (the theta_k of an instability sweep, one training for
    all k): `fn` runs after each, and reads the step from `model.optimizer.iterations`.
    """

    def __init__(self, iteration: Union[int, Sequence[int]], fn: Callable):
        super().__init__()
        steps = (iteration,) if isinstance(iteration, (int, np.integer)) else iteration
        self.iterations = tuple(sorted({int(s) for s in steps}))
        if not self.iterations:
            raise ValueError("CaptureAt needs at least one iteration")
        self.iteration = self.iterations[-1]  # the last: a network resumed past it needs no capture
        self.fn, self.done = fn, False

    def _implements_train_batch_hooks(self):
        return not self.done  # per-batch hooks slow every step: only until the last point is caught

    def on_train_batch_end(self, batch, logs=None):
        if self.done:
            return
        step = int(self.model.optimizer.iterations.numpy())
        if step in self.iterations:
            self.fn(self.model)
            self.done = step == self.iteration


@contextlib.contextmanager
def forgetting_traced_gradients():
    """Drop the gradient functions that tracing registered globally while the block ran.

    Under every tf.distribute strategy (the default one too) the optimizer sums gradients with
    `ReplicaContext.all_reduce`, a `tf.custom_gradient`; each trace of a train step registers its
    gradient function in TensorFlow's global gradient registry under a new name, and that
    function holds the whole traced graph: about 10 MB per traced train step that nothing ever
    frees (issue 19: 14 MB a round, 25 MB per `find_ticket` call). A registration is only read
    while its own graph is being differentiated, during the trace; once `fit` returns, the
    graphs traced inside it are complete, so their registrations can go.
    """
    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    before = set(registry) if isinstance(registry, dict) else None
    try:
        yield
    finally:
        if before is not None:
            for name in [name for name in registry if name not in before and name.startswith("CustomGradient-")]:
                del registry[name]


def train(
    model: keras.Model,
    train_data: Callable[[int], tf.data.Dataset],
    validation: tf.data.Dataset,
    test: tf.data.Dataset,
    total_iterations: int,
    eval_every: int,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    start_iteration: int = 0,
    history: Optional[list] = None,
    on_evaluation: Optional[Callable[[Evaluation], None]] = None,
    verbose: int = 0,
) -> TrainResult:
    """Train `model` (already compiled) from `start_iteration` to `total_iterations`.

    `train_data(i)` returns the training batches from iteration i on. Evaluation happens every
    `eval_every` iterations and at the end, appending to `history` (in place, so a resumed run
    passes the evaluations it already has); `on_evaluation` is where checkpoints are taken.
    """
    if validation is None:
        raise ValueError("no validation set: early stopping selects on it (never on the test set); pass one")
    history = history if history is not None else []
    started = time.perf_counter()
    evaluator = _PeriodicEvaluation(validation, test, history, on_evaluation)
    all_callbacks = list(callbacks) + [evaluator]
    iteration = start_iteration
    full_periods = (total_iterations - iteration) // eval_every
    with forgetting_traced_gradients():
        if full_periods:
            model.fit(
                train_data(iteration),
                epochs=full_periods,
                steps_per_epoch=eval_every,
                callbacks=all_callbacks,
                verbose=verbose,
            )
            iteration += full_periods * eval_every
        if iteration < total_iterations:
            model.fit(
                train_data(iteration),
                epochs=1,
                steps_per_epoch=total_iterations - iteration,
                callbacks=all_callbacks,
                verbose=verbose,
            )
    return summarize(history, total_iterations, time.perf_counter() - started)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One network of a search: which round and branch, its seed, and how its learning rate runs."""

    round: int
    name: str
    seed: int
    iterations: int
    schedule_offset: int = 0
    hold_schedule: bool = False


def train_stage(model, stage: Stage, config: TrainingConfig, inputs, objective: Objective, strategy,
                run=None, progress=None, callbacks: Sequence = (), capture: Optional[CaptureAt] = None,
                log: Callable[[str], None] = print) -> dict:
    """Compile with a fresh optimizer and train one network, resuming from `run`'s in-progress checkpoint.

    The model must already hold the network's masks and starting weights. With `run`, a
    checkpoint is written every `config.checkpoint_every` iterations; returns the stage's result
    (metrics and evaluation history).
    """
    keras.utils.set_random_seed(stage.seed)
    compile_for_stage(model, stage, config, objective, strategy)
    for wrapper in _wrappers(model):
        wrapper.pruning_step.assign(0)
    start, history, previous_seconds = _resume(model, stage, run, log)
    if progress is not None:
        progress.begin(stage.round, stage.name, start, stage.iterations)
    checkpointer = _Checkpointer(model, stage, config, run, progress, history, previous_seconds, start)
    extra = [capture] if capture is not None and start < capture.iteration else []
    result = train(
        model,
        lambda i: inputs.train_from(stage.seed, i),
        inputs.validation,
        inputs.test,
        total_iterations=stage.iterations,
        eval_every=config.eval_every,
        callbacks=extra + list(callbacks),
        start_iteration=start,
        history=history,
        on_evaluation=checkpointer,
    )
    if progress is not None:
        progress.end()
    out = result.metrics()
    out["seconds"] += previous_seconds
    out["history"] = [dataclasses.asdict(e) for e in result.history]
    return out


@dataclasses.dataclass
class _Compiled:
    """What `compile_for_stage` compiled a model with, and its optimizer's state before any step."""

    key: tuple
    optimizer: Any
    loss: Any  # the model's compiled loss container: a compile by anyone else replaces it
    fresh: list


def _compile_key(config: TrainingConfig, objective: Objective, strategy) -> tuple:
    optimizer = repr(sorted(config.optimizer.items())) if isinstance(config.optimizer, dict) else config.optimizer
    return (objective.loss, tuple(objective.metrics), optimizer, config.learning_rate, config.momentum,
            config.warmup_iterations, tuple(config.lr_boundaries), config.jit_compile, id(strategy))


def has_random_layers(model) -> bool:
    """Whether any layer draws random numbers in its forward pass (Dropout, GaussianNoise, ...)."""
    return any(hasattr(layer, "_random_generator") for layer in model.submodules)


def compile_for_stage(model, stage: Stage, config: TrainingConfig, objective: Objective, strategy) -> None:
    """Give `model` a fresh optimizer for `stage`: compiled once, reset for every later network.

    Each `compile` makes Keras trace new train and test functions for the next `fit`. A model
    compiled here keeps them: a later stage resets the optimizer's variables to the values they
    had before the first step (iterations, slots) and moves the learning-rate schedule, which is
    a fresh optimizer, bit for bit, without a new trace. Two cases compile anew, as before: a
    model whose layers draw random numbers (a traced dropout op's stream starts from the seed set
    when it was traced, so each network needs its own trace to keep its seed), and a model that
    someone else compiled since (its optimizer or loss container is not the one recorded here).
    """
    key = _compile_key(config, objective, strategy)
    cached = getattr(model, "_tf_lottery_compiled", None)
    if (cached is not None and cached.key == key and model.optimizer is cached.optimizer
            and getattr(model, "compiled_loss", None) is cached.loss):
        with strategy.scope():
            for variable, value in zip(cached.optimizer.variables, cached.fresh):
                variable.assign(value)
            schedule = getattr(cached.optimizer, "_learning_rate", None)
            if isinstance(schedule, Movable):
                schedule.move(stage.schedule_offset, stage.hold_schedule)
        return
    with strategy.scope():
        optimizer = make_optimizer(config, stage.schedule_offset, stage.hold_schedule, movable=True)
        objective.compile(model, optimizer, config.jit_compile)
        model.optimizer.build(model.trainable_variables)
    reusable = None if has_random_layers(model) else _Compiled(
        key, model.optimizer, model.compiled_loss, [v.numpy() for v in model.optimizer.variables])
    object.__setattr__(model, "_tf_lottery_compiled", reusable)  # a plain attribute: Keras must not track it


def _resume(model, stage: Stage, run, log) -> tuple[int, list, float]:
    """(start iteration, evaluations so far, seconds so far): from `run`'s checkpoint of this stage, if any."""
    state = run.load_progress(stage.iterations) if run is not None else None
    if state is None:
        return 0, [], 0.0
    if (state["round"], state["stage"]) != (stage.round, stage.name):
        run.clear_progress()  # another network's, finished since: its result is on disk
        return 0, [], 0.0
    checkpoints.restore_progress(run, state, model)
    log(f"resuming round {stage.round} ({stage.name}) at iteration {state['iteration']}")
    return state["iteration"], [Evaluation(**e) for e in state["history"]], state["seconds"]


class _Checkpointer:
    """At each evaluation: update the progress bar, and every `checkpoint_every` iterations save model,
    optimizer and history to the run's in_progress/ (never at the last iteration: that is the result)."""

    def __init__(self, model, stage, config, run, progress, history, previous_seconds, start):
        self.model, self.stage, self.config, self.run, self.progress = model, stage, config, run, progress
        self.history, self.previous_seconds, self.last_saved = history, previous_seconds, start
        self.started = time.perf_counter()

    def __call__(self, evaluation: Evaluation) -> None:
        if self.progress is not None:
            self.progress.update(evaluation)
        every, iteration = self.config.checkpoint_every, evaluation.iteration
        if self.run is None or not every or iteration - self.last_saved < every or iteration >= self.stage.iterations:
            return
        checkpoints.save_progress(self.run, {
            "round": self.stage.round,
            "stage": self.stage.name,
            "iteration": iteration,
            "history": [dataclasses.asdict(e) for e in self.history],
            "seconds": self.previous_seconds + time.perf_counter() - self.started,
        }, self.model)
        self.last_saved = iteration


def _wrappers(model) -> list:
    return pruning.prunable_layers(model)
