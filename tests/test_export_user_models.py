"""Exports of runs made with the user's own model (issue 9): rebuilt from config.json without
model=, one line when that is impossible, softmax outputs served right, and never the rewind point."""

import json
import os
import shutil

import tf_lottery  # noqa: F401  (before TensorFlow: tf-keras)
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tf_lottery import export as E

from export_helpers import cli, make_run, tree
from fashion_slices import as_float, fashion_slice


def softmax_cnn(seed=0):
    """A functional CNN ending in a softmax: it outputs probabilities, not logits."""
    init = keras.initializers.GlorotUniform(seed)
    inputs = keras.Input((28, 28, 1), name="pixels")
    x = keras.layers.Conv2D(4, 3, activation="relu", kernel_initializer=init, name="conv")(inputs)
    x = keras.layers.MaxPooling2D(4)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu", kernel_initializer=init, name="hidden")(x)
    outputs = keras.layers.Dense(10, activation="softmax", kernel_initializer=init, name="probs")(x)
    return keras.Model(inputs, outputs, name="user_cnn")


class Halve(keras.layers.Layer):
    """A custom layer class: config.json names it, but only this module can rebuild it."""

    def call(self, inputs):
        return inputs * 0.5


def custom_mlp(seed=0):
    inputs = keras.Input((28, 28, 1))
    x = Halve(name="halve")(keras.layers.Flatten()(inputs))
    outputs = keras.layers.Dense(10, kernel_initializer=keras.initializers.GlorotUniform(seed), name="out")(x)
    return keras.Model(inputs, outputs, name="custom_mlp")


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """(run directory, Ticket) of a 2-round search of the softmax CNN."""
    out = str(tmp_path_factory.mktemp("user_cnn") / "run")
    return out, make_run(out, rounds=2, rate=0.5, iterations=20, source=softmax_cnn)


@pytest.fixture(scope="module")
def images():
    return as_float(fashion_slice(train=10, validation=0, test=64).test_images)


def test_user_model_run_exports_from_the_program_without_model(cnn, tmp_path, capfd):
    run, ticket = cnn
    base = tmp_path / "serving"
    code, out, err = cli(capfd, f"--run_dir={run}", "--round=1", f"--export_base={base}", "--format=sparse")
    assert code == 0, err
    assert "exported version 1" in out and "OK" in out and "(probabilities: the model ends in a softmax)" in out
    meta = E.read_metadata(str(base / "1"))
    assert meta["model_output"] == "probabilities" and meta["model"] == "user_cnn" and meta["input_shape"] == [28, 28, 1]
    assert meta["layers"]["conv"]["storage"] == "sparse"
    assert E.verify(str(base / "1")).ok  # against round 1 rebuilt from config.json alone


def test_softmax_model_serves_its_probabilities_and_their_log_as_logits(cnn, images, tmp_path):
    run, ticket = cnn
    result = E.export_ticket(run, str(tmp_path / "s"), round=1, tflite=True, images=images)
    served = tf.saved_model.load(result.path).signatures[E.SIGNATURE](images=tf.constant(images))
    expected = ticket.trained_model(1)(images, training=False).numpy()
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(served["logits"].numpy(), np.log(expected), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tf.nn.softmax(served["logits"]).numpy(), expected, rtol=0, atol=1e-6)
    check = result.verification
    assert check.model_output == "probabilities" and check.max_abs_diff <= 1e-5 and check.tflite_max_abs_diff <= 1e-5


def test_ticket_export_is_the_trained_network_never_the_rewind_point(cnn, images, tmp_path):
    run, ticket = cnn
    result = ticket.export(str(tmp_path / "s"), round=1, images=images)
    loaded = tf.saved_model.load(result.path).signatures[E.SIGNATURE]
    probabilities = loaded(images=tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities, ticket.trained_model(1)(images).numpy(), rtol=0, atol=1e-6)
    assert np.abs(probabilities - ticket.rewound_model(1)(images).numpy()).max() > 1e-3
    assert result.verification.reference == "the model given" and E.verify(result.path).ok

    base = tmp_path / "rewound"
    with pytest.raises(ValueError, match=r"the model given is not the trained network of round 1 of .*rewound_model\(\) is the untrained"):
        E.export_model(ticket.rewound_model(1), str(base), metadata={"run_dir": run, "round": 1}, images=images)
    assert not base.exists()


def test_a_model_that_does_not_fit_the_run_is_one_line(cnn):
    run, _ = cnn
    with pytest.raises(ValueError, match=r"does not fit the run: its pruned kernels are .*pass the run's own model"):
        E.load_ticket(run, 1, model=custom_mlp)


def test_custom_layer_run_needs_model_and_says_so_in_one_line(tmp_path, capfd, images):
    run = str(tmp_path / "run")
    make_run(run, rounds=1, iterations=10, source=custom_mlp)
    base = tmp_path / "serving"
    before = tree(run)
    code, out, err = cli(capfd, f"--run_dir={run}", f"--export_base={base}")
    assert code == 1 and len(err) == 1, err
    assert "the run's own model cannot be rebuilt from config.json" in err[0] and "pass model=" in err[0]
    assert tree(run) == before and not base.exists()
    result = E.export_ticket(run, str(base), model=custom_mlp, images=images)
    assert result.verification.ok and E.read_metadata(result.path)["model_output"] == "logits"


def test_user_run_recording_no_architecture_says_model_is_needed(cnn, tmp_path):
    run, _ = cnn
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    record = json.loads((copy / "config.json").read_text())
    del record["architecture"]
    (copy / "config.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="records no architecture; pass model="):
        E.load_ticket(str(copy), 1)
    assert E.load_ticket(str(copy), 1, model=softmax_cnn).round == 1
    assert os.path.isdir(copy)
