"""find_ticket on users' own models and datasets, and one-line refusals of what cannot work."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tf_lottery

from tf_lottery import config as C
from tf_lottery.masking import masks as mask_math
from tf_lottery.masking import pruning

from fashion_slices import as_float, fashion_slice


@pytest.fixture(scope="module")
def splits():
    return fashion_slice(train=1200, validation=300, test=300)


def small_config(rounds=3, iterations=40, eval_every=20, fc_rate=0.2, conv_rate=0.1, epochs=None):
    return C.override(tf_lottery.from_preset("lenet_300_100", "fast"), iterations=iterations, epochs=epochs,
                      eval_every=eval_every, rounds=rounds, fc_rate=fc_rate, conv_rate=conv_rate)


def sequential_model():
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu", name="hidden"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="user_sequential",
    )


def functional_model(seed=0):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv",
                            kernel_initializer=keras.initializers.GlorotNormal(seed))(inputs)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(32, activation="relu", name="dense",
                           kernel_initializer=keras.initializers.GlorotNormal(seed + 1))(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="user_functional")


def check_ticket(ticket, rates, rounds):
    """Rounds ran, masks follow each layer's rate, and the model holds the ticket."""
    assert [r["round"] for r in ticket.rounds] == list(range(rounds))
    assert sorted(ticket.masks) == sorted(rates)
    for level, masks in enumerate(ticket.round_masks):
        for name, rate in rates.items():
            assert np.count_nonzero(masks[name]) == mask_math.keep_count(masks[name].size, (1 - rate) ** level)
    for earlier, later in zip(ticket.round_masks, ticket.round_masks[1:]):
        assert mask_math.is_subset(later, earlier)
    assert pruning.count_pruned_nonzero(ticket.trained_model("last", strip=False)) == 0
    assert pruning.count_pruned_nonzero(ticket.rewound_model("last")) == 0
    for row in ticket.rounds:
        assert 0.0 <= row["test_accuracy"] <= 1.0 and np.isfinite(row["validation_loss"])
    stripped = ticket.trained_model("last")
    logits = stripped.predict(np.zeros((2, 28, 28, 1), np.float32), verbose=0)
    assert logits.shape == (2, 10)


def test_a_sequential_model_object(splits):
    ticket = tf_lottery.find_ticket(sequential_model(), small_config(), splits=splits, log=lambda s: None)
    check_ticket(ticket, {"hidden": 0.2, "logits": 0.1}, rounds=3)
    assert ticket.rounds[-1]["test_accuracy"] > 0.3  # it learned something in 40 iterations


def test_a_functional_conv_model_from_a_builder_with_a_seed(splits):
    seeds = []

    def build(seed):
        seeds.append(seed)
        return functional_model(seed)

    cfg = small_config()
    cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, seed=5))
    ticket = tf_lottery.find_ticket(build, cfg, splits=splits, log=lambda s: None)
    assert seeds == [5]
    check_ticket(ticket, {"conv": 0.1, "dense": 0.2, "logits": 0.1}, rounds=3)


def test_a_builder_without_a_seed_and_user_datasets(splits):
    images, labels = as_float(splits.train_images), splits.train_labels

    def batches(x, y, n):
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(n)

    train = batches(images, labels, 60).shuffle(20, seed=0)
    validation = batches(as_float(splits.validation_images), splits.validation_labels, 100)
    test = batches(as_float(splits.test_images), splits.test_labels, 100)
    seen = []

    def count_batches(batch, logs=None):
        seen.append(batch)

    cfg = small_config(rounds=2, iterations=None, eval_every=10, epochs=2)
    ticket = tf_lottery.find_ticket(
        lambda: functional_model(),
        cfg,
        train=train,
        validation=validation,
        test=test,
        callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=count_batches)],
        log=lambda s: None,
    )
    check_ticket(ticket, {"conv": 0.1, "dense": 0.2, "logits": 0.1}, rounds=2)
    # two epochs of 20 batches per round, evaluated every 10 iterations on the user's sets
    assert len(seen) == 2 * 40
    history = ticket.rounds[0]
    assert history["iterations"] == 40 and history["early_stop_iteration"] in (10, 20, 30, 40)


def test_a_keras_3_model_is_carried_over_and_handed_back(splits):
    import keras as keras3

    assert keras3.__version__.startswith("3.")
    model = keras3.Sequential([keras3.Input((28, 28, 1)), keras3.layers.Flatten(),
                               keras3.layers.Dense(32, activation="relu", name="hidden"), keras3.layers.Dense(10, name="logits")])
    for source in (model, lambda: model):
        ticket = tf_lottery.find_ticket(source, small_config(rounds=2), splits=splits, log=lambda s: None)
        check_ticket(ticket, {"hidden": 0.2, "logits": 0.1}, rounds=2)
    back = ticket.to_keras("last")
    assert isinstance(back, keras3.Model)
    images = as_float(splits.test_images[:50])
    np.testing.assert_allclose(back.predict(images, verbose=0), ticket.trained_model("last").predict(images, verbose=0),
                               atol=1e-5)


def test_a_subclassed_model_is_refused_in_one_line(splits):
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="mine")
            self.flatten = keras.layers.Flatten()
            self.dense = keras.layers.Dense(10)

        def call(self, x):
            return self.dense(self.flatten(x))

    with pytest.raises(ValueError, match="'mine' is a subclassed model") as info:
        tf_lottery.find_ticket(Subclassed(), small_config(), splits=splits, log=lambda s: None)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="subclassed"):
        tf_lottery.wrap(Subclassed())


def test_an_input_shape_that_does_not_fit_the_data_is_refused_naming_both(splits, tmp_path):
    def cifar_sized():
        inputs = keras.Input((32, 32, 3))
        return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)), name="wide")

    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"\(28, 28, 1\).*'wide'.*\(32, 32, 3\)") as info:
        tf_lottery.find_ticket(cifar_sized(), small_config(), splits=splits, output_dir=str(out), log=lambda s: None)
    assert "\n" not in str(info.value)
    assert not out.exists()  # refused before anything was written
    train = tf.data.Dataset.from_tensor_slices((as_float(splits.train_images), splits.train_labels)).batch(60)
    with pytest.raises(ValueError, match=r"\(28, 28, 1\).*\(32, 32, 3\)") as info:
        tf_lottery.find_ticket(cifar_sized(), small_config(), train=train, validation=train, test=train, log=lambda s: None)
    assert "\n" not in str(info.value)
