"""Export a ticket as a TF Serving SavedModel (dense or sparse kernels), optionally as TFLite, and verify it.

Layout written: <export_base>[/<model_name>]/<version>/ with saved_model.pb, variables/ and
assets.extra/ (tf_lottery_export.json, and tf_serving_warmup_requests when warmup is asked),
plus model.tflite when asked (what TF Serving's --prefer_tflite_model loads). A version is
filled in a hidden temporary directory, checked against the in-memory ticket, and renamed into
place only if every check passes, so TF Serving never sees a half-written or wrong version.

Signature `serving_default`: input `images` float32 [None, H, W, C] scaled to [0, 1]; outputs
`logits` float32 [None, classes] and `probabilities` (their softmax).

Sparse format: each pruned Dense kernel is stored as its surviving values (float32) and their
flat positions (int32) and applied with `tf.sparse.sparse_dense_matmul`; each pruned Conv2D
kernel is stored the same way and scattered back into a dense kernel inside the graph on each
call (TensorFlow has no sparse convolution op), then convolved densely.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from typing import Callable, Optional, Sequence, Union

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_lottery import masks as mask_math
from tf_lottery import pruning
from tf_lottery.config import ExperimentConfig
from tf_lottery import checkpoints
from tf_lottery.files import atomic_directory, atomic_write_bytes
from tf_lottery.run_directory import RunDirectory, select_round

FORMATS = ("dense", "sparse")
SIGNATURE = "serving_default"
INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "probabilities")
METADATA_FILE = "tf_lottery_export.json"
WARMUP_FILE = "tf_serving_warmup_requests"
TFLITE_FILE = "model.tflite"
MAX_WARMUP = 1000  # TF Serving reads at most 1000 warmup records.
CHECK_EXAMPLES = 512
TOLERANCE = 1e-5
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

ModelSource = Union[keras.Model, Callable[..., keras.Model], None]


# -- choosing and loading a ticket --------------------------------------------------------------
@dataclasses.dataclass
class LoadedTicket:
    """A round's trained ticket rebuilt from a run directory."""

    wrapped: keras.Model
    round: int
    masks: dict[str, np.ndarray]
    config: ExperimentConfig
    run_dir: str

    @property
    def weights_remaining(self) -> float:
        return mask_math.weights_remaining(self.masks)


def _build(source: ModelSource, record: dict, input_shape: tuple) -> keras.Model:
    """The run's architecture: `source` if given, else the recorded one (config.json), else the zoo model."""
    config = record["experiment"]
    if isinstance(source, keras.Model):
        return keras.models.clone_model(source)
    if source is not None:
        return source()
    if record.get("model", {}).get("source") == "user":
        if not record.get("architecture"):
            raise ValueError("the run was made with your own model and records no architecture; pass model=")
        try:
            return keras.models.model_from_json(record["architecture"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"the run's own model cannot be rebuilt from config.json ({str(e).splitlines()[0]}); "
                             "pass model= (a function building it)") from e
    import tf_lottery_models as zoo

    return zoo.get_builder(config.model.model)(
        input_shape, num_classes=10, dropout_rate=config.model.dropout_rate, seed=config.runtime.seed
    )


def load_ticket(run_dir: str, round: Union[str, int] = "best", model: ModelSource = None, input_shape=None) -> LoadedTicket:
    """Rebuild the model of `run_dir`, wrap it and restore round `round`'s trained weights and masks.

    The architecture is the zoo model named in the run's config (or `model`, for runs of a user
    model); `input_shape` defaults to the run's dataset's image shape.
    """
    if not os.path.isdir(run_dir):
        raise ValueError(f"run_dir {run_dir!r} does not exist or is not a directory")
    run = RunDirectory(run_dir)
    summary = run.read_summary()
    record = run.read_record()
    config = record["experiment"]
    index = select_round(summary["rounds"], round)
    prefix = run.checkpoint_prefix(index)
    if not tf.io.gfile.exists(prefix + ".index"):
        raise ValueError(f"round {index} of {run_dir!r} has no checkpoint ({prefix}.index is missing)")
    if input_shape is None:
        recorded = record.get("model", {}).get("input_shape")
        input_shape = tuple(recorded) if recorded else _dataset_shape(config.data.dataset)
    wrapped = pruning.wrap(_build(model, record, tuple(input_shape)), warn=False)
    try:
        checkpoints.restore_round(run, index, wrapped)
    except ValueError as e:
        raise ValueError(f"{e}; the model rebuilt is {config.model.model!r} on inputs {tuple(input_shape)}") from e
    masks = pruning.get_masks(wrapped)
    saved = run.load_masks(index, pruning.kernel_shapes(wrapped)) if index > 0 else None
    if saved is not None and any(not np.array_equal(saved[k], masks[k]) for k in masks):
        raise ValueError(f"round {index} of {run_dir!r}: the checkpoint's masks differ from masks.npz")
    return LoadedTicket(wrapped=wrapped, round=index, masks=masks, config=config, run_dir=os.path.abspath(run_dir))


def _dataset_shape(dataset: str) -> tuple:
    shapes = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
    if dataset not in shapes:
        raise ValueError(f"dataset {dataset!r} has no known image shape; pass input_shape (known: {', '.join(shapes)})")
    return shapes[dataset]


def test_images(config: ExperimentConfig, count: int = CHECK_EXAMPLES) -> np.ndarray:
    """The first `count` test images of the run's dataset, float32 in [0, 1], for output checks and warmup."""
    from tf_lottery import data

    splits = data.load(config.data.dataset, data_dir=config.data.data_dir, validation_size=0)
    return splits.test_images[:count].astype(np.float32) / 255.0


# -- sparse layers ------------------------------------------------------------------------------
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


# -- the SavedModel ---------------------------------------------------------------------------
class _Serving(tf.Module):
    """What the SavedModel holds: the variables, grouped per layer for verification, and `serve`.

    The Keras model is only captured by `serve`, not tracked, so no Keras metadata is saved.
    """

    def __init__(self, model: keras.Model, input_shape: tuple):
        super().__init__(name="tf_lottery_ticket")
        self.layer_variables = {
            layer.name: {w.name.split("/")[-1].split(":")[0]: w for w in layer.weights}
            for layer in model.layers
            if layer.weights
        }
        spec = tf.TensorSpec([None, *input_shape], tf.float32, name=INPUT_NAME)

        @tf.function(input_signature=[spec])
        def serve(images):
            logits = tf.cast(model(images, training=False), tf.float32)
            return {OUTPUT_NAMES[0]: logits, OUTPUT_NAMES[1]: tf.nn.softmax(logits)}

        self.serve = serve


def _save(model: keras.Model, input_shape: tuple, path: str) -> None:
    module = _Serving(model, input_shape)
    tf.saved_model.save(module, path, signatures={SIGNATURE: module.serve})


def _predict(fn, images: np.ndarray, batch: int = 256) -> np.ndarray:
    parts = [fn(images[i : i + batch]) for i in range(0, len(images), batch)]
    return np.concatenate(parts, axis=0)


def _tflite_bytes(dense_saved_model: str) -> bytes:
    converter = tf.lite.TFLiteConverter.from_saved_model(dense_saved_model, signature_keys=[SIGNATURE])
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    return converter.convert()


def tflite_logits(content_or_path: Union[bytes, str], images: np.ndarray) -> np.ndarray:
    """Logits of a TFLite export through its `serving_default` signature runner."""
    if isinstance(content_or_path, str):
        interpreter = tf.lite.Interpreter(model_path=content_or_path)
    else:
        interpreter = tf.lite.Interpreter(model_content=content_or_path)
    runner = interpreter.get_signature_runner(SIGNATURE)
    return _predict(lambda x: runner(**{INPUT_NAME: x})[OUTPUT_NAMES[0]], images)


def _write_warmup(path: str, images: np.ndarray, count: int, model_name: str) -> None:
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError as e:
        raise ValueError("warmup requests need tensorflow-serving-api; pip install 'tf-lottery[serving]'") from e
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(count):
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model_name
            request.model_spec.signature_name = SIGNATURE
            image = images[i % len(images)][None]
            request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(image.astype(np.float32)))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def read_warmup(path: str) -> list:
    """The PredictionLog records of a warmup file (for checks and replay)."""
    from tensorflow_serving.apis import prediction_log_pb2

    logs = []
    for record in tf.data.TFRecordDataset(path):
        logs.append(prediction_log_pb2.PredictionLog.FromString(record.numpy()))
    return logs


# -- where a version goes ------------------------------------------------------------------------
def model_directory(export_base: str, model_name: Optional[str] = None) -> str:
    """export_base, or export_base/model_name after checking that the name cannot leave export_base."""
    base = os.path.abspath(export_base)
    if os.path.exists(base) and not os.path.isdir(base):
        raise ValueError(f"export_base {export_base!r} exists and is not a directory")
    if model_name is None or model_name == "":
        return base
    if not _MODEL_NAME.match(model_name) or model_name in (".", ".."):
        raise ValueError(
            f"model_name {model_name!r} is not allowed; use letters, digits, '.', '_' and '-' "
            "(no '/' or '..': the export must stay inside export_base)"
        )
    path = os.path.join(base, model_name)
    real_base = os.path.realpath(base)
    if os.path.commonpath([os.path.realpath(path), real_base]) != real_base:
        raise ValueError(f"model_name {model_name!r} resolves outside export_base {export_base!r} (a symlink)")
    return path


def versions(directory: str) -> list[int]:
    """The integer version directories TF Serving would see in `directory`."""
    if not os.path.isdir(directory):
        return []
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit() and os.path.isdir(os.path.join(directory, n)))


def _version_path(directory: str, version: Optional[int], overwrite: bool) -> tuple[int, str]:
    if version is None:
        existing = versions(directory)
        version = existing[-1] + 1 if existing else 1
    if isinstance(version, bool) or int(version) != version or version < 1:
        raise ValueError(f"version={version!r} must be an integer >= 1 (TF Serving's version directories)")
    path = os.path.join(directory, str(int(version)))
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"version directory {path} already exists; pass overwrite (--overwrite) to replace it or choose another version")
    return int(version), path


def _make_readable(path: str) -> None:
    """Temporary files and directories are private (0600/0700); a model server may run as another user."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o755 & ~umask)
    for root, dirs, files in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755 & ~umask)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644 & ~umask)


def directory_bytes(path: str, exclude: Sequence[str] = ()) -> int:
    """Total size of the files under `path`, leaving out top-level names in `exclude`."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            if root == path and name in exclude:
                continue
            total += os.path.getsize(os.path.join(root, name))
    return total


# -- verification ----------------------------------------------------------------------------
@dataclasses.dataclass
class Verification:
    """What an export holds and how its outputs compare with the ticket it came from."""

    path: str
    format: str
    signature: dict
    layers: dict
    size_bytes: int
    tflite_bytes: Optional[int]
    examples: int
    max_abs_diff: Optional[float]
    tflite_max_abs_diff: Optional[float]
    warmup_records: int
    reference: str

    @property
    def ok(self) -> bool:
        diffs = [d for d in (self.max_abs_diff, self.tflite_max_abs_diff) if d is not None]
        pruned = sum(layer.get("pruned_nonzero", 0) for layer in self.layers.values())
        return all(d <= TOLERANCE for d in diffs) and pruned == 0

    def report(self) -> str:
        lines = [f"export {self.path} ({self.format}): {self.size_bytes:,} bytes on disk"]
        if self.tflite_bytes is not None:
            lines.append(f"  {TFLITE_FILE}: {self.tflite_bytes:,} bytes")
        for kind in ("inputs", "outputs"):
            described = ", ".join(f"{n} {d} {s}" for n, (d, s) in sorted(self.signature[kind].items()))
            lines.append(f"  {SIGNATURE} {kind}: {described}")
        for name, layer in self.layers.items():
            lines.append(
                f"  layer {name}: {layer['storage']} kernel {tuple(layer['shape'])}, "
                f"{100 * layer['weights_remaining']:.2f}% weights remaining"
                + (f", {layer['pruned_nonzero']} pruned weights non-zero" if "pruned_nonzero" in layer else "")
            )
        if self.warmup_records:
            lines.append(f"  warmup: {self.warmup_records} PredictionLog records")
        if self.max_abs_diff is None:
            lines.append(f"  outputs: not compared ({self.reference})")
        else:
            lines.append(f"  outputs vs {self.reference} on {self.examples} examples: max |diff| {self.max_abs_diff:.2e}")
        if self.tflite_max_abs_diff is not None:
            lines.append(f"  TFLite outputs: max |diff| {self.tflite_max_abs_diff:.2e}")
        lines.append("  OK" if self.ok else f"  FAILED (tolerance {TOLERANCE}, pruned weights must be 0)")
        return "\n".join(lines)


def read_metadata(export_dir: str) -> dict:
    path = os.path.join(export_dir, "assets.extra", METADATA_FILE)
    if not os.path.exists(path):
        raise ValueError(f"{export_dir!r} is not a tf_lottery export ({path} is missing)")
    with open(path) as f:
        return json.load(f)


def _graph_positions(export_dir: str) -> dict[str, np.ndarray]:
    """The constant kernel positions of each sparse layer, read from saved_model.pb's functions."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    found = {}
    for graph in saved.meta_graphs:
        for function in graph.graph_def.library.function:
            for node in function.node_def:
                parts = node.name.split("/")
                if node.op == "Const" and len(parts) >= 2 and parts[-1] == "positions":
                    found[parts[-2]] = decode_positions(tf.make_ndarray(node.attr["value"].tensor).reshape(-1))
    return found


def _spec(tensor_spec) -> tuple[str, list]:
    return tensor_spec.dtype.name, [None if d is None else int(d) for d in tensor_spec.shape]


def verify(
    export_dir: str,
    images: Optional[np.ndarray] = None,
    reference: Optional[keras.Model] = None,
    masks: Optional[dict] = None,
    run_dir: Optional[str] = None,
) -> Verification:
    """Load an export and report its signature, per-layer sparsity, size and output agreement.

    The reference is `reference` (a ticket model) or else the run and round recorded in the export
    (or `run_dir`); without one, only the TFLite file is compared with the SavedModel.
    """
    if not os.path.isdir(export_dir) or not tf.saved_model.contains_saved_model(export_dir):
        raise ValueError(f"{export_dir!r} holds no SavedModel")
    meta = read_metadata(export_dir)
    loaded = tf.saved_model.load(export_dir)
    if SIGNATURE not in loaded.signatures:
        raise ValueError(f"{export_dir!r} has no {SIGNATURE!r} signature (has {sorted(loaded.signatures)})")
    signature = loaded.signatures[SIGNATURE]
    inputs = {n: _spec(s) for n, s in signature.structured_input_signature[1].items()}
    outputs = {n: _spec(s) for n, s in signature.structured_outputs.items()}

    label = "no reference"
    if reference is None and (run_dir or meta.get("run_dir")):
        source = run_dir or meta["run_dir"]
        if os.path.isdir(source):
            ticket = load_ticket(source, meta["round"], input_shape=meta["input_shape"])
            reference, masks, label = ticket.wrapped, ticket.masks, f"round {ticket.round} of {source}"
            if images is None:
                images = test_images(ticket.config)
        else:
            label = f"no reference: run directory {source} is gone"
    elif reference is not None:
        label = "the in-memory ticket"
    if reference is not None and masks is None and pruning.prunable_layers(reference):
        masks = pruning.get_masks(reference)

    constants = _graph_positions(export_dir)
    layers = {}
    for name, info in meta["layers"].items():
        held = {k: v.numpy() for k, v in loaded.layer_variables[name].items()}
        shape = tuple(info["shape"])
        if info["storage"] == "sparse":
            positions, values = constants[name], held["values"]
            dense = np.zeros(int(np.prod(shape)), np.float32)
            if info["kind"] == "fc":  # positions index the transposed kernel
                dense = dense.reshape(shape[::-1]).ravel()
                dense[positions] = values
                dense = dense.reshape(shape[::-1]).T
            else:
                dense[positions] = values
                dense = dense.reshape(shape)
        else:
            dense = held["kernel"]
        layer = {
            "storage": info["storage"],
            "kind": info["kind"],
            "shape": list(shape),
            "weights_remaining": float(np.count_nonzero(dense)) / dense.size,
        }
        if masks is not None and name in masks:
            layer["pruned_nonzero"] = int(np.count_nonzero(dense[masks[name] == 0]))
        layers[name] = layer

    diff = None
    count = 0
    if reference is not None and images is not None:
        count = len(images)
        expected = _predict(lambda x: reference(x, training=False).numpy(), images)
        got = _predict(lambda x: signature(**{INPUT_NAME: tf.constant(x)})[OUTPUT_NAMES[0]].numpy(), images)
        diff = float(np.max(np.abs(expected - got)))

    tflite_path = os.path.join(export_dir, TFLITE_FILE)
    tflite_bytes = tflite_diff = None
    if os.path.exists(tflite_path):
        tflite_bytes = os.path.getsize(tflite_path)
        if images is not None:
            count = count or len(images)
            base = (
                _predict(lambda x: reference(x, training=False).numpy(), images)
                if reference is not None
                else _predict(lambda x: signature(**{INPUT_NAME: tf.constant(x)})[OUTPUT_NAMES[0]].numpy(), images)
            )
            tflite_diff = float(np.max(np.abs(tflite_logits(tflite_path, images) - base)))

    warmup_path = os.path.join(export_dir, "assets.extra", WARMUP_FILE)
    warmup = sum(1 for _ in tf.data.TFRecordDataset(warmup_path)) if os.path.exists(warmup_path) else 0
    return Verification(
        path=os.path.abspath(export_dir),
        format=meta["format"],
        signature={"inputs": inputs, "outputs": outputs},
        layers=layers,
        size_bytes=directory_bytes(export_dir, exclude=(TFLITE_FILE,)),
        tflite_bytes=tflite_bytes,
        examples=count,
        max_abs_diff=diff,
        tflite_max_abs_diff=tflite_diff,
        warmup_records=warmup,
        reference=label,
    )


# -- export ------------------------------------------------------------------------------------
@dataclasses.dataclass
class ExportResult:
    """Where a version was written and what its verification found."""

    path: str
    version: int
    format: str
    verification: Verification


def export_model(
    model: keras.Model,
    export_base: str,
    *,
    format: str = "dense",
    model_name: Optional[str] = None,
    version: Optional[int] = None,
    images: Optional[np.ndarray] = None,
    warmup: int = 0,
    tflite: bool = False,
    overwrite: bool = False,
    metadata: Optional[dict] = None,
) -> ExportResult:
    """Export a ticket model (wrapped, or already stripped) as a new TF Serving version.

    `images` (float32 in [0, 1]) are what the export's outputs are checked on before it is
    published, and what warmup requests hold; without them, uniform random inputs are used.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; allowed: {', '.join(FORMATS)}")
    if isinstance(warmup, bool) or int(warmup) != warmup or not 0 <= warmup <= MAX_WARMUP:
        raise ValueError(f"warmup={warmup!r} must be an integer in 0..{MAX_WARMUP} (TF Serving reads at most {MAX_WARMUP})")
    pruning.check_keras_model(model)
    if isinstance(model.output, (list, tuple)) or isinstance(model.input, (list, tuple)):
        raise ValueError(f"model {model.name!r} has several inputs or outputs; allowed: one image input, one logits output")
    input_shape = tuple(int(d) for d in model.input_shape[1:])
    reference = model
    if pruning.prunable_layers(model):
        masks = pruning.get_masks(model)
        stripped = pruning.strip(model)
    else:
        stripped = model
        masks = {l.name: (l.kernel.numpy() != 0).astype(np.float32) for l in model.layers
                 if isinstance(l, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D))}
    if images is None:
        images = np.random.default_rng(0).random((64, *input_shape), dtype=np.float32)
    images = np.asarray(images, np.float32)
    if images.shape[1:] != input_shape:
        raise ValueError(f"check images have shape {images.shape[1:]} but the model takes {input_shape}")

    directory = model_directory(export_base, model_name)
    version, path = _version_path(directory, version, overwrite)
    serving_name = model_name or os.path.basename(directory.rstrip(os.sep)) or "model"

    served, storage = sparse_model(stripped, masks) if format == "sparse" else (stripped, {n: "dense" for n in masks})
    kinds = {l.name: ("fc" if isinstance(l, keras.layers.Dense) else "conv") for l in stripped.layers if l.name in masks}
    kernels = {l.name: l.kernel for l in stripped.layers if l.name in masks}
    meta = {
        **(metadata or {}),
        "format": format,
        "input_shape": list(input_shape),
        "signature": {"name": SIGNATURE, "inputs": {INPUT_NAME: "float32 [None, H, W, C] in [0, 1]"}, "outputs": list(OUTPUT_NAMES)},
        "weights_remaining": mask_math.weights_remaining(masks),
        "layers": {
            name: {"kind": kinds[name], "storage": storage[name], "shape": list(kernels[name].shape)} for name in masks
        },
    }
    with atomic_directory(path) as tmp:
        _save(served, input_shape, tmp)
        extra = os.path.join(tmp, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        atomic_write_bytes(os.path.join(extra, METADATA_FILE), (json.dumps(meta, indent=1) + "\n").encode())
        if warmup:
            _write_warmup(os.path.join(extra, WARMUP_FILE), images, warmup, serving_name)
        if tflite:
            if format == "dense":
                content = _tflite_bytes(tmp)
            else:
                with tempfile.TemporaryDirectory() as dense_dir:
                    _save(stripped, input_shape, dense_dir)
                    content = _tflite_bytes(dense_dir)
            atomic_write_bytes(os.path.join(tmp, TFLITE_FILE), content)
        check = verify(tmp, images=images, reference=reference, masks=masks)
        if not check.ok:
            raise RuntimeError(f"export not published, its check failed:\n{check.report()}")
        _make_readable(tmp)
    check.path = path
    return ExportResult(path=path, version=version, format=format, verification=check)


def export_ticket(
    run_dir: str,
    export_base: str,
    round: Union[str, int] = "best",
    format: str = "dense",
    *,
    model_name: Optional[str] = None,
    version: Optional[int] = None,
    warmup: int = 0,
    tflite: bool = False,
    overwrite: bool = False,
    model: ModelSource = None,
    images: Optional[np.ndarray] = None,
) -> ExportResult:
    """Export round `round` ('best', 'last' or a number) of the run in `run_dir` as a TF Serving version.

    Outputs are checked on the first test images of the run's dataset (or `images`).
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; allowed: {', '.join(FORMATS)}")
    model_directory(export_base, model_name)  # refuse a bad name before the slow part
    ticket = load_ticket(run_dir, round, model=model)
    if images is None:
        images = test_images(ticket.config)
    return export_model(
        ticket.wrapped,
        export_base,
        format=format,
        model_name=model_name,
        version=version,
        images=images,
        warmup=warmup,
        tflite=tflite,
        overwrite=overwrite,
        metadata={"run_dir": ticket.run_dir, "round": ticket.round, "model": ticket.config.model.model},
    )
