"""Pruned Dense and Conv2D layers stored as their surviving values at fixed flat positions.

Each pruned Dense kernel is stored as its surviving values (float32, a variable) and their flat
positions (a graph constant, int32 or uint16 gaps on disk) and applied with
`tf.sparse.sparse_dense_matmul`; each pruned Conv2D kernel is stored the same way and scattered
back into a dense kernel inside the graph on each call (TensorFlow has no sparse convolution
op), then convolved densely.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras

CSR_MIN_BATCH = 32  # from this batch size on, SparseDense multiplies in CSR form (measured faster)


def _positions(kernel: np.ndarray, mask: np.ndarray, transpose: bool) -> tuple[np.ndarray, np.ndarray]:
    """Flat int32 positions and float32 values of the surviving weights (of kernel.T when `transpose`)."""
    k, m = (kernel.T, mask.T) if transpose else (kernel, mask)
    if k.size >= 2**31:
        raise ValueError(f"kernel of shape {kernel.shape} is too large for int32 positions")
    flat = np.flatnonzero(np.asarray(m).ravel() != 0)
    return flat.astype(np.int32), np.ascontiguousarray(k).ravel()[flat].astype(np.float32)


def encode_positions(positions: np.ndarray) -> np.ndarray:
    """Sorted positions as uint16 gaps when every gap fits (half the bytes of int32), else as int32."""
    positions = np.asarray(positions, np.int64)
    gaps = np.diff(positions, prepend=0)
    if len(gaps) and gaps.max() < 2**16:
        return gaps.astype(np.uint16)
    return positions.astype(np.int32)


def decode_positions(stored: np.ndarray) -> np.ndarray:
    """int64 positions back from `encode_positions`' uint16 gaps or int32 positions."""
    stored = np.asarray(stored)
    return np.cumsum(stored.astype(np.int64)) if stored.dtype == np.uint16 else stored.astype(np.int64)


def _positions_tensor(positions: np.ndarray) -> tf.Tensor:
    """int32 positions from the compact constant; constant inputs only, so Grappler folds it at load."""
    stored = encode_positions(positions)
    constant = tf.constant(stored, name="positions")
    if stored.dtype == np.uint16:
        return tf.cumsum(tf.cast(constant, tf.int32))
    return constant


class SparseDense(keras.layers.Layer):
    """Dense on rank-2 inputs whose kernel is its surviving values (a variable) at fixed flat positions.

    The positions are a graph constant (int32 on disk), so Grappler folds their decoding into
    the int64 indices once when the graph loads instead of on every request. Small batches use
    sparse_dense_matmul (COO); batches of CSR_MIN_BATCH or more use CSR SparseMatrixMatMul.
    """

    def __init__(self, units: int, input_dim: int, positions: np.ndarray, activation=None, use_bias: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.units, self.input_dim = int(units), int(input_dim)
        self.kernel_positions = np.asarray(positions, np.int32)  # into the transposed kernel [units, input_dim]
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias

    def build(self, input_shape):
        count = len(self.kernel_positions)
        self.values = self.add_weight("values", (count,), tf.float32, initializer="zeros", trainable=False)
        self.bias = self.add_weight("bias", (self.units,), tf.float32, initializer="zeros") if self.use_bias else None
        self.built = True

    def call(self, inputs):
        positions = _positions_tensor(self.kernel_positions)
        indices = tf.cast(tf.stack([positions // self.input_dim, positions % self.input_dim], axis=1), tf.int64)
        shape = tf.constant([self.units, self.input_dim], tf.int64)
        inputs = tf.cast(inputs, tf.float32)

        def coo():
            kernel_t = tf.SparseTensor(indices, self.values, shape)
            return tf.transpose(tf.sparse.sparse_dense_matmul(kernel_t, inputs, adjoint_b=True))

        def csr():
            kernel_t = tf.raw_ops.SparseTensorToCSRSparseMatrix(indices=indices, values=self.values, dense_shape=shape)
            return tf.raw_ops.SparseMatrixMatMul(a=kernel_t, b=inputs, transpose_b=True, transpose_output=True)

        outputs = tf.cond(tf.shape(inputs)[0] >= CSR_MIN_BATCH, csr, coo)
        outputs = tf.ensure_shape(outputs, [None, self.units])
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return self.activation(outputs)

    def assign_kernel(self, kernel: np.ndarray, mask: np.ndarray) -> None:
        positions, values = _positions(kernel, mask, transpose=True)
        assert np.array_equal(positions, self.kernel_positions)
        self.values.assign(values)


class SparseConv2D(keras.layers.Conv2D):
    """Conv2D whose kernel is its surviving values (a variable) at fixed flat positions (a graph constant),
    scattered into a dense kernel on each call: TensorFlow has no sparse convolution op."""

    def __init__(self, positions: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        self.kernel_positions = np.asarray(positions, np.int32)

    def build(self, input_shape):
        channels = self._get_input_channel(tf.TensorShape(input_shape))
        self.kernel_shape = tuple(self.kernel_size) + (channels // self.groups, self.filters)
        count = len(self.kernel_positions)
        self.values = self.add_weight("values", (count,), tf.float32, initializer="zeros", trainable=False)
        self.bias = self.add_weight("bias", (self.filters,), tf.float32, initializer="zeros") if self.use_bias else None
        self.built = True

    def call(self, inputs):
        positions = _positions_tensor(self.kernel_positions)
        flat = tf.scatter_nd(positions[:, None], self.values, [int(np.prod(self.kernel_shape))])
        outputs = self.convolution_op(inputs, tf.reshape(flat, self.kernel_shape))
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias, data_format=self._tf_data_format)
        return self.activation(outputs)

    def assign_kernel(self, kernel: np.ndarray, mask: np.ndarray) -> None:
        positions, values = _positions(kernel, mask, transpose=False)
        assert np.array_equal(positions, self.kernel_positions)
        self.values.assign(values)


def _sparse_layer(layer, mask: np.ndarray):
    """The sparse twin of a Dense/Conv2D layer, or None when its kind or input rank is not supported."""
    kernel = layer.kernel.numpy()
    if type(layer) is keras.layers.Dense and len(layer.input_shape) == 2:
        positions, _ = _positions(kernel, mask, transpose=True)
        return SparseDense(
            layer.units, kernel.shape[0], positions, layer.activation, layer.use_bias, name=layer.name
        )
    if type(layer) is keras.layers.Conv2D and layer.groups == 1:
        positions, _ = _positions(kernel, mask, transpose=False)
        return SparseConv2D(positions, **layer.get_config())
    return None


def sparse_model(model: keras.Model, masks: dict[str, np.ndarray]) -> tuple[keras.Model, dict[str, str]]:
    """A copy of the stripped `model` whose masked kernels are stored sparse; also each layer's storage."""
    storage: dict[str, str] = {}
    sources = {layer.name: layer for layer in model.layers}

    def clone(layer):
        if layer.name in masks:
            twin = _sparse_layer(layer, masks[layer.name])
            storage[layer.name] = "dense" if twin is None else "sparse"
            if twin is not None:
                return twin
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    for layer in copy.layers:
        source = sources[layer.name]
        if isinstance(layer, (SparseDense, SparseConv2D)):
            layer.assign_kernel(source.kernel.numpy(), masks[layer.name])
            if layer.use_bias:
                layer.bias.assign(source.bias.numpy())
        elif source.weights:
            layer.set_weights(source.get_weights())
    return copy, storage
