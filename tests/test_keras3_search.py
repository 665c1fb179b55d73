"""Keras 3 users end to end: a Keras 3 model is searched with the TF-MOT engine and handed back as Keras 3,
and a process that imported Keras 3 and TensorFlow first keeps using Keras 3 after a search."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tf_lottery
from tf_lottery import config as C
from tf_lottery.masking import pruning

from fashion_slices import as_float, fashion_slice


class PrunedStayZero(tf_keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps, self.leaked = 0, 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        self.leaked += pruning.count_pruned_nonzero(self.model)


def keras3_cnn():
    import keras

    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Rescaling(2.0, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(32, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="keras3_cnn")


def test_a_keras_3_cnn_is_searched_handed_back_and_exported(tmp_path):
    import keras

    splits = fashion_slice(train=1200, validation=300, test=300)
    cfg = C.override(tf_lottery.from_preset("lenet_300_100", "fast"), iterations=40, epochs=None, eval_every=20, rounds=3,
                     fc_rate=0.5, conv_rate=0.3)
    watch = PrunedStayZero()
    model = keras3_cnn()
    ticket = tf_lottery.find_ticket(model, cfg, splits=splits, callbacks=[watch], log=lambda s: None)
    assert watch.steps == 3 * 40 and watch.leaked == 0
    assert sorted(ticket.masks) == ["conv", "hidden", "logits"]

    back = ticket.to_keras("last")
    names = lambda m: [l.name for l in m.layers if not isinstance(l, keras.layers.InputLayer)]  # noqa: E731
    assert isinstance(back, keras.Model) and names(back) == names(model)
    images = as_float(splits.test_images[:100])
    trained = ticket.trained_model("last")
    np.testing.assert_allclose(back.predict(images, verbose=0), trained.predict(images, verbose=0), atol=1e-5)
    kernel = back.get_layer("hidden").kernel.numpy()
    assert np.all(kernel[ticket.masks["hidden"] == 0] == 0)

    back.export(str(tmp_path / "keras3"))  # Keras 3's own SavedModel export
    served = tf.saved_model.load(str(tmp_path / "keras3"))
    np.testing.assert_allclose(served.serve(tf.constant(images)).numpy(), trained.predict(images, verbose=0), atol=1e-5)
    result = ticket.export(str(tmp_path / "serving"), round="last")  # tf_lottery's TF Serving layout
    signature = tf.saved_model.load(result.path).signatures["serving_default"]
    np.testing.assert_allclose(signature(images=tf.constant(images))["logits"].numpy(),
                               trained.predict(images, verbose=0), atol=1e-5)


def test_keras_3_code_keeps_working_after_a_search_when_keras_and_tensorflow_came_first():
    script = textwrap.dedent("""
        import keras
        import numpy as np
        import tensorflow as tf
        import tf_lottery
        from tf_lottery import config as C
        from tf_lottery.data import datasets as data

        splits = data.load("fashion_mnist")
        cfg = C.override(tf_lottery.from_preset("lenet_300_100", "fast"), iterations=20, epochs=None, eval_every=10, rounds=2,
                         train_subset=600)
        model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
        ticket = tf_lottery.find_ticket(model, cfg, splits=splits, log=lambda s: None)
        assert isinstance(ticket.to_keras(), keras.Model)

        other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
        other.compile("adam", "mse")
        history = other.fit(np.ones((32, 4)), np.ones((32, 1)), epochs=2, verbose=0)
        print(keras.__version__, tf.keras.__version__, len(history.history["loss"]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, TF_LOTTERY_OFFLINE="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    keras_version, tf_keras_version, epochs = result.stdout.split()[-3:]
    assert keras_version.startswith("3.") and tf_keras_version.startswith("3.") and epochs == "2"


def test_a_layer_that_cannot_be_carried_over_is_refused_before_anything_is_written(tmp_path):
    import keras

    inputs = keras.Input((28, 28))
    outputs = keras.layers.Dense(10)(keras.layers.LSTM(4, name="my_rnn")(inputs))
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"layer 'my_rnn' \(keras.layers.LSTM\) cannot be carried over") as info:
        tf_lottery.find_ticket(keras.Model(inputs, outputs), output_dir=str(out))
    assert "\n" not in str(info.value) and not out.exists()


def test_a_keras_3_cnn_prunes_whole_filters_and_exports_compact(tmp_path):
    splits = fashion_slice(train=600, validation=100, test=512)
    cfg = C.override(tf_lottery.from_preset("lenet_300_100", "fast"), iterations=20, epochs=None, eval_every=20, rounds=2,
                     fc_rate=0.5, conv_rate=0.5, granularity="unit")
    ticket = tf_lottery.find_ticket(keras3_cnn(), cfg, splits=splits, log=lambda s: None)
    filters = ticket.masks["conv"].reshape(-1, 8).any(axis=0)
    assert int(filters.sum()) == 4 and int(ticket.masks["hidden"].any(axis=0).sum()) == 16
    result = ticket.export(str(tmp_path / "serving"), round="last", format="compact")
    assert result.verification.ok and "conv 8->4" in result.verification.report()
    back = ticket.to_keras("last")  # handed back at full size, pruned filters zero
    assert back.get_layer("conv").kernel.shape[-1] == 8
