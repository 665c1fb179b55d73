"""pruning.py in process: what gets wrapped and how masks are named, the keep-pruned constraint, and
reading and writing masks and weights."""

import warnings

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tf_lottery_models as zoo
from tf_lottery import config as C
from tf_lottery import strategies
from tf_lottery.masking import pruning
from tf_lottery.masking.tfmot import tfmot


class Custom(keras.layers.Layer):
    def build(self, input_shape):
        self.kernel = self.add_weight("kernel", (int(input_shape[-1]), 5))

    def call(self, x):
        return tf.matmul(x, self.kernel)


class PrunableCustom(Custom, tfmot.sparsity.keras.PrunableLayer):
    def get_prunable_weights(self):
        return [self.kernel]


def mixed_model():
    inputs = keras.Input((6,))
    x = keras.layers.Embedding(10, 4, name="embed")(keras.layers.Lambda(lambda t: tf.cast(t, tf.int32) % 10)(inputs))
    x = keras.layers.Flatten()(x)
    x = Custom(name="custom")(x)
    x = PrunableCustom(name="prunable")(x)
    x = keras.Sequential([keras.layers.Dense(7, name="inner")], name="block")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x))


def test_what_is_wrapped_and_how_masks_are_named():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrapped = pruning.wrap(mixed_model())
    messages = [str(w.message) for w in caught if "stay dense" in str(w.message)]
    assert messages == ["tf_lottery: layer 'custom' (Custom) has 120 weights that stay dense; implement "
                        "tfmot.sparsity.keras.PrunableLayer to prune it"]
    assert pruning.layer_kinds(wrapped) == {"embed": "fc", "prunable": "fc", "block/inner": "fc", "out": "fc"}
    assert pruning.output_layer_name(wrapped) == "out"
    assert pruning.kernel_shapes(wrapped) == {"embed": (10, 4), "prunable": (5, 5), "block/inner": (5, 7), "out": (7, 3)}
    conv = pruning.wrap(zoo.get_builder("conv2")((28, 28, 1), seed=0))
    assert pruning.layer_kinds(conv) == {"conv1": "conv", "conv2": "conv", "fc1": "fc", "fc2": "fc", "output": "fc"}
    assert strategies.layer_rates(C.PruningConfig(fc_rate=0.2, conv_rate=0.1), pruning.layer_kinds(conv)) == {"conv1": 0.1, "conv2": 0.1, "fc1": 0.2, "fc2": 0.2, "output": 0.1}


def test_models_tf_mot_cannot_wrap_are_refused_in_one_line():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    for model, pattern in [(Subclassed(name="mine"), "'mine' is a subclassed model"), (object(), "is not a tf-keras model")]:
        with pytest.raises(ValueError, match=pattern) as info:
            pruning.wrap(model)
        assert "\n" not in str(info.value)
    no_kernels = keras.Sequential([keras.Input((3,)), keras.layers.ReLU()], name="plain")
    with pytest.raises(ValueError, match="'plain' has no layer to prune"):
        pruning.wrap(no_kernels)


def test_the_keep_pruned_constraint_runs_after_the_users_own_constraint():
    inputs = keras.Input((8,))
    outputs = keras.layers.Dense(4, kernel_constraint=keras.constraints.MaxNorm(0.1), name="d")(inputs)
    wrapped = pruning.wrap(keras.Model(inputs, outputs))
    mask = np.zeros((8, 4), np.float32)
    mask[:4] = 1
    pruning.set_masks(wrapped, {"d": mask})
    wrapped.compile(keras.optimizers.SGD(1.0), "mse")
    x, y = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32), np.ones((64, 4), np.float32)
    wrapped.fit(x, y, epochs=2, verbose=0)
    kernel = pruning.get_kernels(wrapped)["d"]
    assert np.all(kernel[4:] == 0) and np.any(kernel[:4] != 0)
    assert np.all(np.linalg.norm(kernel, axis=0) <= 0.1 + 1e-6)  # MaxNorm still holds
    pruning.prepare(wrapped)  # idempotent: one constraint, not two
    assert not isinstance(pruning.prunables(wrapped)[0].kernel.constraint.inner, pruning.KeepPruned)


def test_masks_and_weights_are_written_and_restored_exactly():
    wrapped = pruning.wrap(zoo.get_builder("lenet_300_100")((28, 28, 1), seed=0))
    theta = pruning.snapshot(wrapped)
    rng = np.random.default_rng(1)
    masks = {n: (rng.random(s) < 0.3).astype(np.float32) for n, s in pruning.kernel_shapes(wrapped).items()}
    pruning.set_masks(wrapped, masks)
    assert pruning.count_pruned_nonzero(wrapped) == 0
    for variable in pruning.model_variables(wrapped):
        variable.assign(variable + 1.0)  # anything: restore must bring theta back under the masks
    pruning.restore(wrapped, theta)
    positions = pruning.kernel_positions(wrapped)
    for i, (now, before) in enumerate(zip(pruning.snapshot(wrapped), theta)):
        name = next((n for n, p in positions.items() if p == i), None)
        np.testing.assert_array_equal(now, before * masks[name] if name else before)
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.size for m in masks.values())
    assert pruning.weights_remaining_all(wrapped, masks) == pytest.approx((kept + 410) / (total + 410))
    with pytest.raises(ValueError, match="masks are for layers"):
        pruning.set_masks(wrapped, {"fc1": masks["fc1"]})
    with pytest.raises(ValueError, match="shape"):
        pruning.set_masks(wrapped, {**masks, "fc1": np.ones((2, 2), np.float32)})


def test_reinitialized_draws_new_kernels_only():
    wrapped = pruning.wrap(zoo.get_builder("lenet_300_100")((28, 28, 1), seed=0))
    theta = pruning.snapshot(wrapped)
    fresh = pruning.reinitialized(wrapped, theta, seed=5)
    again = pruning.reinitialized(wrapped, theta, seed=5)
    kernels = set(pruning.kernel_positions(wrapped).values())
    for i, (a, b, c) in enumerate(zip(theta, fresh, again)):
        np.testing.assert_array_equal(b, c)  # a pure function of the seed
        assert (not np.array_equal(a, b)) == (i in kernels)
