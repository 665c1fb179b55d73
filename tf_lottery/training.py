"""Train one network of a ticket search: fresh optimizer, periodic evaluation, early-stop metric.

A round's training runs as Keras `fit` calls whose "epochs" are evaluation periods of
`eval_every` iterations, so evaluation needs no per-batch hook. The training data order is a
pure function of (seed, iteration), so a round can restart from any checkpointed iteration
and see exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_lottery import pruning
from tf_lottery.config import TrainingConfig


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


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


def make_optimizer(config: TrainingConfig) -> keras.optimizers.Optimizer:
    """A fresh optimizer: no state carries across rounds, as in the paper."""
    rate = config.learning_rate
    if config.warmup_iterations or config.lr_boundaries:
        rate = WarmupPiecewise(config.learning_rate, config.warmup_iterations, config.lr_boundaries)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(rate)
    return keras.optimizers.SGD(rate, momentum=config.momentum)


def compile_for_round(model: keras.Model, config: TrainingConfig) -> None:
    """Compile with a fresh masked optimizer, logits cross-entropy and accuracy."""
    model.compile(
        optimizer=pruning.masked_optimizer(make_optimizer(config), model),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def train_batches(
    images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, start_iteration: int = 0
) -> tf.data.Dataset:
    """Endless training batches whose order depends only on (seed, iteration).

    Epoch e is a stateless shuffle seeded by (seed, e); starting at iteration i skips whole
    epochs arithmetically and only i mod steps_per_epoch index batches.
    """
    n = len(images)
    if n == 0:
        raise ValueError("the training set is empty; allowed: at least one example")
    steps_per_epoch = math.ceil(n / batch_size)
    first_epoch, offset = divmod(int(start_iteration), steps_per_epoch)
    images_t = tf.constant(images)
    labels_t = tf.constant(labels)

    def epoch_indices(epoch):
        order = tf.argsort(tf.random.stateless_uniform([n], seed=tf.stack([tf.cast(seed, tf.int64), epoch])))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    def gather(index):
        x = tf.cast(tf.gather(images_t, index), tf.float32) / 255.0
        return x, tf.gather(labels_t, index)

    dataset = (
        tf.data.Dataset.range(first_epoch, 2**62)
        .flat_map(epoch_indices)
        .skip(offset)
        .map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )
    return dataset


def eval_batches(images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> tf.data.Dataset:
    """All examples once, in order, none dropped: evaluation is exact."""
    return (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .batch(batch_size)
        .map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y))
        .cache()
        .prefetch(tf.data.AUTOTUNE)
    )


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
        val = self.model.evaluate(self.validation, verbose=0, return_dict=True) if self.validation else {}
        test = self.model.evaluate(self.test, verbose=0, return_dict=True)
        evaluation = Evaluation(
            iteration=iteration,
            train_loss=train_loss,
            validation_loss=float(val.get("loss", test["loss"])),
            validation_accuracy=float(val.get("accuracy", test["accuracy"])),
            test_loss=float(test["loss"]),
            test_accuracy=float(test["accuracy"]),
        )
        self.history.append(evaluation)
        if self.on_evaluation is not None:
            self.on_evaluation(evaluation)


def train(
    model: keras.Model,
    train_data: Callable[[int], tf.data.Dataset],
    validation: Optional[tf.data.Dataset],
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
    history = history if history is not None else []
    started = time.perf_counter()
    evaluator = _PeriodicEvaluation(validation, test, history, on_evaluation)
    all_callbacks = list(callbacks) + [evaluator]
    iteration = start_iteration
    full_periods = (total_iterations - iteration) // eval_every
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
