"""The sparse layers of a sparse export, in-process on small random kernels with hand-made masks."""

import tf_lottery  # noqa: F401  (before TensorFlow: tf-keras)
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tf_lottery.export import sparse_layers as S


def _masked(shape, keep, seed):
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=shape).astype(np.float32)
    mask = (rng.random(shape) < keep).astype(np.float32)
    return kernel, mask


def test_positions_are_stored_as_uint16_gaps_when_they_fit_and_int32_otherwise():
    small = np.array([0, 3, 65535 + 3, 70000], np.int32)  # every gap < 2**16
    stored = S.encode_positions(small)
    assert stored.dtype == np.uint16 and stored.tolist() == [0, 3, 65535, 70000 - 65538]
    np.testing.assert_array_equal(S.decode_positions(stored), small)
    wide = np.array([5, 5 + 2**16], np.int32)  # one gap of 2**16 does not fit
    assert S.encode_positions(wide).dtype == np.int32
    np.testing.assert_array_equal(S.decode_positions(S.encode_positions(wide)), wide)
    assert S.decode_positions(S.encode_positions(np.array([], np.int32))).tolist() == []


def test_positions_of_a_dense_kernel_index_its_transpose():
    kernel = np.arange(6, dtype=np.float32).reshape(2, 3)  # [input_dim=2, units=3]
    mask = np.array([[1, 0, 1], [0, 1, 0]], np.float32)
    positions, values = S._positions(kernel, mask, transpose=True)
    # kernel.T is [[0, 3], [1, 4], [2, 5]]; survivors 0, 4, 2 at flat positions 0, 3, 4
    assert positions.tolist() == [0, 3, 4] and values.tolist() == [0.0, 4.0, 2.0]


@pytest.mark.parametrize("use_bias, activation", [(True, "relu"), (False, None)])
def test_sparse_dense_equals_the_masked_dense_layer_on_both_sides_of_the_csr_switch(use_bias, activation):
    kernel, mask = _masked((20, 7), keep=0.3, seed=1)
    bias = np.linspace(-1, 1, 7).astype(np.float32)
    positions, _ = S._positions(kernel, mask, transpose=True)
    layer = S.SparseDense(7, 20, positions, activation=activation, use_bias=use_bias)
    layer.build((None, 20))
    layer.assign_kernel(kernel, mask)
    if use_bias:
        layer.bias.assign(bias)
    assert layer.values.shape == (int(mask.sum()),)
    x = np.random.default_rng(2).normal(size=(70, 20)).astype(np.float32)
    expected = x @ (kernel * mask) + (bias if use_bias else 0)
    if activation == "relu":
        expected = np.maximum(expected, 0)
    for batch in (1, S.CSR_MIN_BATCH - 1, S.CSR_MIN_BATCH, 70):
        np.testing.assert_allclose(layer(tf.constant(x[:batch])).numpy(), expected[:batch], rtol=0, atol=1e-5)


def test_sparse_conv2d_equals_the_masked_convolution():
    conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")
    conv.build((None, 6, 6, 2))
    kernel, mask = _masked((3, 3, 2, 4), keep=0.4, seed=3)
    conv.set_weights([kernel * mask, np.arange(4, dtype=np.float32) / 10])
    positions, _ = S._positions(kernel, mask, transpose=False)
    sparse = S.SparseConv2D(positions, **conv.get_config())
    sparse.build((None, 6, 6, 2))
    sparse.assign_kernel(kernel * mask, mask)
    sparse.bias.assign(conv.bias.numpy())
    x = tf.constant(np.random.default_rng(4).normal(size=(5, 6, 6, 2)).astype(np.float32))
    np.testing.assert_allclose(sparse(x).numpy(), conv(x).numpy(), rtol=0, atol=1e-5)
    assert sorted(w.name.split("/")[-1].split(":")[0] for w in sparse.weights) == ["bias", "values"]  # no dense kernel


def test_sparse_model_swaps_supported_layers_and_keeps_the_rest_dense():
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    x = keras.layers.Dense(5, name="per_pixel")(x)  # Dense on rank-4 inputs: no sparse twin
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(4, name="out")(x)
    model = keras.Model(inputs, outputs)
    masks = {}
    for layer in model.layers:
        if layer.weights:
            kernel, mask = _masked(tuple(layer.kernel.shape), keep=0.5, seed=len(masks))
            layer.kernel.assign(kernel * mask)
            masks[layer.name] = mask
    copy, storage = S.sparse_model(model, masks)
    assert storage == {"conv": "sparse", "per_pixel": "dense", "out": "sparse"}
    assert isinstance(copy.get_layer("conv"), S.SparseConv2D) and isinstance(copy.get_layer("out"), S.SparseDense)
    x = tf.constant(np.random.default_rng(5).random((3, 6, 6, 1), dtype=np.float32))
    np.testing.assert_allclose(copy(x).numpy(), model(x).numpy(), rtol=0, atol=1e-5)
