"""Compact exports: the units and filters that carry no signal removed, the network rebuilt smaller with
stock layers, and its outputs the ticket's on real test images (Lenet, Conv-2, a user's functional
model with BatchNormalization); the metadata records the original and compact shapes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tf_keras as keras

from tf_lottery import export
from tf_lottery.export.compact import compact_model

from export_helpers import make_run
from fashion_slices import as_float, fashion_slice


def _metadata(path):
    with open(os.path.join(path, "assets.extra", "tf_lottery_export.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def unit_ticket(tmp_path_factory):
    return make_run(str(tmp_path_factory.mktemp("unit") / "run"), rounds=3, rate=0.5, iterations=30,
                    granularity="unit", test=512)


def test_a_unit_ticket_compacts_to_its_surviving_units_and_serves_the_same_outputs(unit_ticket, tmp_path):
    result = export.export_ticket(unit_ticket.output_dir, str(tmp_path / "serving"), round="last", format="compact")
    check = result.verification
    assert check.ok and check.examples == 512 and check.max_abs_diff <= 1e-5
    meta = _metadata(result.path)
    layers = meta["layers"]
    # Two levels at unit rate 0.5: fc1 keeps 75 of 300 units, fc2 25 of 100; the output layer all 10.
    assert layers["fc1"]["shape"] == [784, 75] and layers["fc1"]["original_shape"] == [784, 300]
    assert layers["fc2"]["shape"] == [75, 25] and layers["output"]["shape"] == [25, 10]
    masks = unit_ticket.masks
    np.testing.assert_array_equal(layers["fc1"]["kept_units"], np.flatnonzero(masks["fc1"].any(axis=0)))
    assert "removed 300 of 400 units" in meta["compact"] and "fc1 300->75" in check.report()
    dense = export.export_ticket(unit_ticket.output_dir, str(tmp_path / "dense"), round="last", format="dense")
    assert result.verification.size_bytes < 0.4 * dense.verification.size_bytes
    again = export.verify(result.path)  # from the run the export records, kernels put back in place
    assert again.ok and all(layer["pruned_nonzero"] == 0 for layer in again.layers.values())


def test_the_bias_of_a_pruned_unit_carries_no_signal(unit_ticket):
    stripped = unit_ticket.trained_model("last")
    images = as_float(fashion_slice(test=256).test_images)
    before = stripped(images, training=False).numpy()
    fc1 = stripped.get_layer("fc1")
    pruned = np.flatnonzero(~unit_ticket.masks["fc1"].any(axis=0))
    kernel, bias = fc1.get_weights()
    bias[pruned] = 5.0  # a live relu output for every pruned unit: its outgoing rows must be masked
    fc1.set_weights([kernel, bias])
    np.testing.assert_array_equal(stripped(images, training=False).numpy(), before)


def test_a_conv2_unit_ticket_loses_whole_filters(tmp_path):
    ticket = make_run(str(tmp_path / "run"), model="conv2", rounds=2, rate=0.5, iterations=10, train=300,
                      granularity="unit", test=512)
    result = export.export_ticket(ticket.output_dir, str(tmp_path / "serving"), round="last", format="compact")
    assert result.verification.ok and result.verification.max_abs_diff <= 1e-5
    layers = _metadata(result.path)["layers"]
    conv = [n for n, layer in layers.items() if layer["kind"] == "conv"]
    assert conv and all(layers[n]["shape"][-1] < layers[n]["original_shape"][-1] for n in conv)
    second = conv[1]
    assert layers[second]["shape"][-2] == layers[conv[0]]["shape"][-1]  # reads only the filters kept before it


def _user_model():
    """A user's functional model with BatchNormalization, weights, biases and statistics all non-trivial."""
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(6, 5, strides=2, padding="valid", name="a")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn_a")(x))
    x = keras.layers.Conv2D(5, 3, padding="same", name="b")(x)
    x = keras.layers.BatchNormalization(name="bn_b")(x)
    x = keras.layers.Flatten()(keras.layers.MaxPooling2D(4)(keras.layers.ReLU()(x)))
    x = keras.layers.Dense(8, activation="tanh", name="fc")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(x))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 2, w.shape).astype(np.float32) if i in (0, 3) else
                               rng.normal(0, 0.5, w.shape).astype(np.float32) for i, w in enumerate(weights)])
        elif weights:
            layer.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in weights])
    return model


def _zero(model, name, index):
    kernel, *rest = model.get_layer(name).get_weights()
    kernel[index] = 0
    model.get_layer(name).set_weights([kernel, *rest])


def test_a_users_functional_model_with_batch_normalization_compacts_exactly(tmp_path):
    model = _user_model()
    _zero(model, "a", (..., 1))  # a's filter 1: inputs pruned, a constant (1 after bn_a) read by a `same` conv: kept
    gamma, beta, mean, var = model.get_layer("bn_a").get_weights()
    beta[1], mean[1] = 1.0, model.get_layer("a").get_weights()[1][1]
    model.get_layer("bn_a").set_weights([gamma, beta, mean, var])
    _zero(model, "b", (..., 3, slice(None)))  # a's filter 3 feeds nothing: removed
    _zero(model, "b", (..., 2))  # b's filter 2: a constant read through pooling by a Dense layer: folded, removed
    _zero(model, "out", (5, slice(None)))  # fc's unit 5 feeds nothing: removed
    _zero(model, "fc", (slice(None), 6))  # fc's unit 6: tanh(bias), folded into out's bias, removed
    images = as_float(fashion_slice(test=512).test_images)
    compacted = compact_model(model, {n: (model.get_layer(n).kernel.numpy() != 0).astype(np.float32)
                                      for n in ("a", "b", "fc", "out")})
    assert list(compacted.kept["a"].units) == [0, 1, 2, 4, 5]
    assert list(compacted.kept["b"].rows) == [0, 1, 2, 4, 5] and list(compacted.kept["b"].units) == [0, 1, 3, 4]
    assert list(compacted.kept["fc"].units) == [0, 1, 2, 3, 4, 7] and compacted.removed_units == 4
    assert compacted.model.get_layer("bn_a").get_weights()[0].shape == (5,)
    np.testing.assert_allclose(compacted.model(images).numpy(), model(images).numpy(), atol=1e-5)
    result = export.export_model(model, str(tmp_path / "serving"), format="compact", images=images, tflite=True)
    assert result.verification.ok and result.verification.max_abs_diff <= 1e-5
    assert result.verification.tflite_max_abs_diff <= 1e-5
    assert _metadata(result.path)["layers"]["fc"]["shape"] == [compacted.kept["fc"].shape[0], 6]


def test_compact_with_nothing_to_remove_says_it_equals_dense(tmp_path):
    model = _user_model()
    result = export.export_model(model, str(tmp_path / "serving"), format="compact",
                                 images=as_float(fashion_slice(test=64).test_images))
    assert result.verification.ok
    assert "nothing to remove; this export equals the dense one" in result.verification.report()
    assert all(layer["shape"] == layer["original_shape"] for layer in _metadata(result.path)["layers"].values())


def test_compact_refuses_a_layer_it_cannot_shrink_in_one_line(tmp_path):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Dense(4, name="a")(keras.layers.Flatten()(inputs))
    x = keras.layers.LayerNormalization(name="norm")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(x))
    with pytest.raises(ValueError) as e:
        export.export_model(model, str(tmp_path / "serving"), format="compact")
    assert "\n" not in str(e.value) and "format='compact'" in str(e.value) and "'norm'" in str(e.value)
    assert not os.path.exists(tmp_path / "serving")


def test_lottery_find_with_unit_granularity_then_compact_export_from_the_shell(tmp_path):
    env = dict(os.environ, TF_LOTTERY_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2")
    run = tmp_path / "run"
    find = subprocess.run([sys.executable, "-m", "tf_lottery.cli.find", "--granularity=unit", "--rounds=4",
                           "--iterations=20", "--eval_every=20", "--train_subset=600", "--fc_rate=0.5",
                           f"--output_dir={run}"], capture_output=True, text=True, env=env, timeout=600)
    assert find.returncode == 0, find.stderr[-2000:]
    exported = subprocess.run([sys.executable, "-m", "tf_lottery.cli.export", f"--run_dir={run}", "--round=last",
                               f"--export_base={tmp_path / 'serving'}", "--format=compact"],
                              capture_output=True, text=True, env=env, timeout=600)
    assert exported.returncode == 0, exported.stderr[-2000:]
    # Three levels at 0.5: fc1 keeps round(300 * 0.125) = 38 units, fc2 12 (as fractions of the original).
    assert "fc1 300->38" in exported.stdout and "compact kernel (784, 38) of (784, 300)" in exported.stdout
    assert "OK" in exported.stdout


def test_a_very_sparse_unstructured_ticket_loses_its_dead_units_and_folds_their_constants(tmp_path):
    ticket = make_run(str(tmp_path / "run"), rounds=4, rate=0.9, iterations=20, test=512)
    result = export.export_ticket(ticket.output_dir, str(tmp_path / "serving"), round="last", format="compact")
    assert result.verification.ok and result.verification.max_abs_diff <= 1e-5
    layers = _metadata(result.path)["layers"]
    masks = ticket.masks
    no_inputs = ~masks["fc1"].any(axis=0)  # fc1 units whose every weight is pruned: relu(bias), folded or zero
    assert no_inputs.any() and layers["fc1"]["shape"][1] <= 300 - int(no_inputs.sum())
    assert layers["fc2"]["shape"][0] == layers["fc1"]["shape"][1]
