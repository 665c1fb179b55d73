"""Ordinary Keras habits must not break a ticket silently (issue: library-grade use in Keras pipelines).

Each habit runs on a real Fashion-MNIST slice with `Invariants` watching every training step:
pruned weights exactly 0, masks unchanged within a round, survivors reset exactly at a round's start.
"""

import os
import warnings

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tf_lottery
import tf_lottery_models as zoo
from tf_lottery import config as C
from tf_lottery.masking import pruning
from tf_lottery.search import training

from fashion_slices import as_float, fashion_slice

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def slices():
    return fashion_slice(train=1200, validation=300, test=500)


@pytest.fixture(scope="module")
def xy(slices):
    return as_float(slices.train_images), slices.train_labels


class Invariants(keras.callbacks.Callback):
    """After every step: pruned weights 0 and masks as at the fit's start; at each start: survivors = rewind."""

    def __init__(self, lottery=None):
        super().__init__()
        self.lottery, self.violations, self.steps, self.starts = lottery, [], 0, []

    def on_train_begin(self, logs=None):
        masks = pruning.get_masks(self.model)
        self.starts.append({"masks": masks, "iterations": int(self.model.optimizer.iterations.numpy())})
        if self.lottery is not None and self.lottery.level > 0:
            positions = pruning.kernel_positions(self.model)
            now = pruning.snapshot(self.model)
            for i, (got, want) in enumerate(zip(now, self.lottery.rewind_weights)):
                name = next((n for n, p in positions.items() if p == i), None)
                expected = want * masks[name] if name else want
                if not np.array_equal(got, expected):
                    self.violations.append(("reset", len(self.starts), i))

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        leaked = pruning.count_pruned_nonzero(self.model)
        if leaked:
            self.violations.append(("pruned weights non-zero", len(self.starts), self.steps, leaked))
        masks = pruning.get_masks(self.model)
        if any(not np.array_equal(masks[n], m) for n, m in self.starts[-1]["masks"].items()):
            self.violations.append(("mask changed within a round", len(self.starts), self.steps))


def lenet(seed=0):
    return tf_lottery.wrap(zoo.get_builder("lenet_300_100")((28, 28, 1), seed=seed))


def fit_rounds(model, xy, callbacks, rounds=3, epochs=1):
    for _ in range(rounds):
        model.fit(*xy, batch_size=60, epochs=epochs, callbacks=callbacks, verbose=0)


OPTIMIZERS = {
    "adam": lambda: keras.optimizers.Adam(1e-3),
    "sgd_nesterov": lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
    "adamw_weight_decay": lambda: keras.optimizers.AdamW(1e-3, weight_decay=0.05),
    "rmsprop_momentum": lambda: keras.optimizers.RMSprop(1e-3, momentum=0.9),
    "adagrad": lambda: keras.optimizers.Adagrad(0.05),
    "lr_schedule": lambda: keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.9)),
    "legacy_adam": lambda: keras.optimizers.legacy.Adam(1e-3),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_compile_once_fit_many_rounds_keeps_pruned_weights_at_zero(name, xy):
    model = lenet()
    lottery = tf_lottery.LotteryCallback(fc_rate=0.5)
    check = Invariants(lottery)
    model.compile(OPTIMIZERS[name](), LOSS)
    fit_rounds(model, xy, [lottery, check])
    assert check.violations == [] and check.steps == 60
    # each round started with a fresh optimizer state, as the paper trains
    assert [s["iterations"] for s in check.starts] == [0, 0, 0]


def test_the_optimizer_state_can_be_kept_on_request(xy):
    model = lenet()
    lottery = tf_lottery.LotteryCallback(fc_rate=0.5, reset_optimizer=False)
    check = Invariants(lottery)
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    fit_rounds(model, xy, [lottery, check], rounds=2)
    assert check.violations == [] and [s["iterations"] for s in check.starts] == [0, 20]


def test_mixed_precision_in_the_callback_path_and_the_driver(xy, slices):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = lenet()
        lottery = tf_lottery.LotteryCallback(fc_rate=0.5)
        check = Invariants(lottery)
        model.compile(keras.optimizers.Adam(1e-3), LOSS)
        fit_rounds(model, xy, [lottery, check])
        assert type(model.optimizer).__name__.startswith("LossScaleOptimizer")
        assert check.violations == []
        cfg = C.override(tf_lottery.from_preset("lenet_300_100", "fast"), iterations=40, epochs=None, eval_every=20, rounds=2,
                         fc_rate=0.5)
        recorder = Invariants()
        ticket = tf_lottery.find_ticket(config=cfg, splits=slices, callbacks=[recorder], log=lambda s: None)
        assert recorder.violations == [] and ticket.rounds[-1]["early_stop_test_accuracy"] > 0.5
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("order", ["early_stopping_after", "early_stopping_before"])
def test_restore_best_weights_cannot_change_the_masks(order, xy):
    model = lenet()
    lottery = tf_lottery.LotteryCallback(fc_rate=0.5)
    check = Invariants(lottery)
    stopping = keras.callbacks.EarlyStopping(monitor="loss", patience=0, restore_best_weights=True)
    callbacks = [lottery, stopping, check] if order == "early_stopping_after" else [stopping, lottery, check]
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # restores within a round leave the masks alone
        fit_rounds(model, xy, callbacks, rounds=3, epochs=2)
    assert check.violations == []
    weights_remaining = [float(np.mean(np.concatenate([m.ravel() for m in s["masks"].values()]))) for s in check.starts]
    assert weights_remaining[0] == 1.0 and weights_remaining[1] < 0.6 and weights_remaining[2] < 0.3


def test_loading_an_older_rounds_weights_is_undone_with_one_warning(xy, tmp_path):
    model = lenet()
    lottery = tf_lottery.LotteryCallback(fc_rate=0.5)
    check = Invariants(lottery)
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    saver = keras.callbacks.ModelCheckpoint(str(tmp_path / "round0.h5"), save_weights_only=True)
    model.fit(*xy, batch_size=60, epochs=1, callbacks=[lottery, check, saver], verbose=0)
    fit_rounds(model, xy, [lottery, check], rounds=1)
    model.load_weights(str(tmp_path / "round0.h5"))  # dense masks and round-0 weights come back
    with pytest.warns(RuntimeWarning, match="re-imposed round 1's masks") as caught:
        fit_rounds(model, xy, [lottery, check], rounds=1)
    assert all("\n" not in str(w.message) for w in caught)
    assert check.violations == [] and lottery.level == 2
    model.set_weights([np.ones_like(w) for w in model.get_weights()])  # any set_weights
    with pytest.warns(RuntimeWarning, match="re-imposed round 2's masks"):
        fit_rounds(model, xy, [lottery, check], rounds=1)
    assert check.violations == []


def test_backup_and_restore_continues_an_interrupted_round(xy, tmp_path):
    class Crash(keras.callbacks.Callback):
        armed = False

        def on_epoch_end(self, epoch, logs=None):
            if self.armed and epoch == 1:
                raise RuntimeError("simulated preemption")

    model = lenet()
    lottery = tf_lottery.LotteryCallback(fc_rate=0.5)
    check, crash = Invariants(lottery), Crash()
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    model.fit(*xy, batch_size=60, epochs=3, callbacks=[lottery, backup, check], verbose=0)
    crash.armed = True
    with pytest.raises(RuntimeError, match="preemption"):
        model.fit(*xy, batch_size=60, epochs=3, callbacks=[lottery, backup, crash, check], verbose=0)
    crash.armed = False
    level_before = lottery.level
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        model.fit(*xy, batch_size=60, epochs=3, callbacks=[lottery, backup, crash, check], verbose=0)
    assert lottery.level == level_before == 1  # the interrupted round continued; nothing pruned twice
    assert [v for v in check.violations if v[0] != "reset"] == []


def test_a_tickets_trained_and_rewound_networks_cannot_be_confused(slices, tmp_path):
    cfg = C.override(tf_lottery.from_preset("lenet_300_100", "fast"), iterations=200, epochs=None, eval_every=100, rounds=2)
    ticket = tf_lottery.find_ticket(config=cfg, splits=slices, log=lambda s: None)
    with pytest.raises(AttributeError, match="trained_model"):
        ticket.model
    images = as_float(slices.test_images)
    trained = ticket.trained_model("last")
    rewound = ticket.rewound_model("last")
    accuracy = lambda m: float(np.mean(np.argmax(m.predict(images, verbose=0), 1) == slices.test_labels))  # noqa: E731
    assert accuracy(trained) == pytest.approx(ticket.rounds[-1]["test_accuracy"], abs=1e-6)
    # the rewound network is theta_0 under the mask (a "supermask" can score well above chance, Zhou et al. 2019)
    positions = pruning.kernel_positions(rewound)
    for i, (got, want) in enumerate(zip(pruning.snapshot(rewound), ticket.rewind_weights)):
        name = next((n for n, p in positions.items() if p == i), None)
        np.testing.assert_array_equal(got, want * ticket.masks[name] if name else want)
    assert accuracy(rewound) < accuracy(trained) - 0.05
    result = ticket.export(str(tmp_path / "serving"), round="last")
    assert result.verification.ok
    served = tf.saved_model.load(result.path).signatures["serving_default"]
    logits = served(images=tf.constant(images))["logits"].numpy()
    assert float(np.mean(np.argmax(logits, 1) == slices.test_labels)) == pytest.approx(accuracy(trained), abs=1e-6)
    assert "\n" not in repr(ticket) and len(repr(ticket)) < 200


class Scaled(keras.layers.Layer):
    """A user's own layer with a kernel, not prunable by TF-MOT."""

    def build(self, input_shape):
        self.kernel = self.add_weight("kernel", (int(input_shape[-1]), 32))

    def call(self, x):
        return tf.matmul(x, self.kernel)


class PrunableScaled(Scaled, tf_lottery.masking.pruning.tfmot.sparsity.keras.PrunableLayer):
    def get_prunable_weights(self):
        return [self.kernel]


def test_custom_and_nested_layers_are_pruned_or_named_with_their_weight_count(slices):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(inputs)
    x = Scaled(name="custom")(x)
    x = PrunableScaled(name="prunable_custom")(x)
    block = keras.Sequential([keras.layers.Dense(16, activation="relu", name="inner")], name="block")
    x = block(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))
    cfg = C.override(tf_lottery.from_preset("lenet_300_100", "fast"), iterations=20, epochs=None, eval_every=20, rounds=2,
                     fc_rate=0.5)
    with pytest.warns(UserWarning, match=r"layer 'custom' \(Scaled\) has 25,088 weights that stay dense") as caught:
        ticket = tf_lottery.find_ticket(model, cfg, splits=slices, log=lambda s: None)
    assert [str(w.message).count("\n") for w in caught if "stay dense" in str(w.message)] == [0]
    assert sorted(ticket.masks) == ["block/inner", "logits", "prunable_custom"]
    row = ticket.rounds[1]
    pruned = sum(m.size for m in ticket.masks.values())
    dense = 784 * 32 + 16 + 10  # the custom kernel and the biases stay dense
    kept = sum(int(np.count_nonzero(m)) for m in ticket.masks.values())
    assert row["all_weights_remaining"] == pytest.approx((kept + dense) / (pruned + dense))
    assert row["weights_remaining"] == pytest.approx(kept / pruned)


def softmax_lenet(kind):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(100, activation="relu", kernel_initializer=keras.initializers.GlorotNormal(0))(x)
    if kind == "dense_softmax":
        outputs = keras.layers.Dense(10, activation="softmax", kernel_initializer=keras.initializers.GlorotNormal(1))(x)
    else:
        logits = keras.layers.Dense(10, kernel_initializer=keras.initializers.GlorotNormal(1))(x)
        outputs = keras.layers.Softmax()(keras.layers.Add()([logits, keras.layers.Lambda(lambda t: t * 0.0)(logits)]))
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("kind", ["dense_softmax", "softmax_after_other_ops"])
def test_a_probability_output_is_trained_as_probabilities(kind, slices):
    model = softmax_lenet(kind)
    assert training.outputs_probabilities(model)
    cfg = C.override(tf_lottery.from_preset("lenet_300_100", "fast"), iterations=200, epochs=None, eval_every=100, rounds=1)
    ticket = tf_lottery.find_ticket(model, cfg, splits=slices, log=lambda s: None)
    assert ticket.rounds[0]["early_stop_test_accuracy"] > 0.7


def test_any_keras_optimizer_loss_and_metrics_and_the_compiled_models_own(slices):
    model = zoo.get_builder("lenet_300_100")((28, 28, 1), seed=0)
    model.compile(keras.optimizers.RMSprop(5e-4, momentum=0.5), LOSS, metrics=["sparse_top_k_categorical_accuracy"])
    cfg = C.override(tf_lottery.from_preset("lenet_300_100", "fast"), iterations=40, epochs=None, eval_every=20, rounds=2)
    check = Invariants()
    ticket = tf_lottery.find_ticket(model, cfg, splits=slices, callbacks=[check], log=lambda s: None)
    optimizer = ticket.config.training.optimizer
    assert optimizer["class_name"].lower() == "rmsprop" and optimizer["config"]["momentum"] == 0.5
    assert ticket.config.training.learning_rate is None
    assert [s["iterations"] for s in check.starts] == [0, 0]  # a fresh copy each network
    assert check.violations == []
    for given in ("adamw", keras.optimizers.SGD(0.05, momentum=0.9)):
        ticket = tf_lottery.find_ticket(config=cfg, splits=slices, optimizer=given, loss=LOSS, log=lambda s: None)
        assert ticket.rounds[-1]["early_stop_test_accuracy"] > 0.5


@pytest.mark.parametrize("path", ["model.keras", "model.h5", "saved_model"])
def test_saved_wrapped_models_load_back(path, xy, tmp_path):
    model = lenet()
    lottery = tf_lottery.LotteryCallback(fc_rate=0.5)
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    fit_rounds(model, xy, [lottery], rounds=2)
    model.save(str(tmp_path / path))
    loaded = tf_lottery.load_model(str(tmp_path / path))
    np.testing.assert_array_equal(loaded.predict(xy[0][:50], verbose=0), model.predict(xy[0][:50], verbose=0))
    for name, mask in pruning.get_masks(model).items():
        np.testing.assert_array_equal(pruning.get_masks(loaded)[name], mask)
    check = Invariants()
    loaded.fit(*xy, batch_size=60, epochs=1, callbacks=[check], verbose=0)  # keeps its masks with any optimizer
    assert check.violations == []


def test_numpy_tuples_dict_inputs_unbatched_datasets_and_one_hot_labels(slices):
    cfg = C.override(tf_lottery.from_preset("lenet_300_100", "fast"), iterations=40, epochs=None, eval_every=20, rounds=2,
                     batch_size=50, controls="random_reinit")
    assert cfg.pruning.controls == ("random_reinit",)
    x, y = as_float(slices.train_images), slices.train_labels
    vx, vy = as_float(slices.validation_images), slices.validation_labels
    tx, ty = as_float(slices.test_images), slices.test_labels
    arrays = tf_lottery.find_ticket(config=cfg, train=(x, y), validation=(vx, vy), test=(tx, ty), log=lambda s: None)
    assert arrays.rounds[1]["controls"]["random_reinit"]["early_stop_test_accuracy"] > 0.4

    one_hot = lambda labels: np.eye(10, dtype=np.float32)[labels]  # noqa: E731
    unbatched = tf.data.Dataset.from_tensor_slices((x, one_hot(y)))
    ticket = tf_lottery.find_ticket(config=cfg, train=unbatched,
                                    validation=tf.data.Dataset.from_tensor_slices((vx, one_hot(vy))),
                                    test=tf.data.Dataset.from_tensor_slices((tx, one_hot(ty))), log=lambda s: None)
    assert ticket.rounds[-1]["early_stop_test_accuracy"] > 0.5

    image, extra = keras.Input((28, 28, 1), name="image"), keras.Input((1,), name="extra")
    hidden = keras.layers.Dense(64, activation="relu")(keras.layers.Flatten()(image))
    merged = keras.layers.Concatenate()([hidden, extra])
    two_inputs = keras.Model([image, extra], keras.layers.Dense(10)(merged))
    as_dict = lambda images: {"image": images, "extra": np.zeros((len(images), 1), np.float32)}  # noqa: E731
    ticket = tf_lottery.find_ticket(two_inputs, cfg, train=(as_dict(x), y), validation=(as_dict(vx), vy),
                                    test=(as_dict(tx), ty), log=lambda s: None)
    assert ticket.rounds[-1]["early_stop_test_accuracy"] > 0.4


def test_errors_from_python_name_the_field_not_a_flag():
    cases = [
        (lambda: C.PruningConfig(fc_rate=1.5), "fc_rate=1.5"),
        (lambda: C.TrainingConfig(batch_size=0), "batch_size=0"),
        (lambda: C.RuntimeConfig(seed=2**32), "seed=4294967296"),
        (lambda: tf_lottery.find_ticket(config=C.ExperimentConfig(pruning=C.PruningConfig(controls="nope"))),
         "unknown control 'nope'"),
        (lambda: tf_lottery.find_ticket(output_dir=""), "output_dir=''"),
    ]
    for call, pattern in cases:
        with pytest.raises(ValueError, match=pattern) as info:
            call()
        assert "\n" not in str(info.value) and "--" not in str(info.value)


def test_submodules_are_attributes_of_the_package():
    assert callable(tf_lottery.data.load) and callable(tf_lottery.report.write_report)
    assert issubclass(tf_lottery.search.distribute.WorkerLostError, RuntimeError)
    assert callable(tf_lottery.export.export_model)


def test_xla_keeps_the_invariants(slices):
    cfg = C.override(tf_lottery.from_preset("lenet_300_100", "fast"), iterations=40, epochs=None, eval_every=20, rounds=3,
                     jit_compile=True, controls=("random_prune",))
    check = Invariants()
    ticket = tf_lottery.find_ticket(config=cfg, splits=slices, callbacks=[check], log=lambda s: None)
    assert check.violations == [] and check.steps == 40 * 5
    assert ticket.rounds[-1]["weights_remaining"] < 0.7
