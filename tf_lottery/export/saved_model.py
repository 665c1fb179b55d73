"""The files of one version: the SavedModel with its `serving_default` signature, model.tflite, and
TF Serving's warmup requests.

Signature `serving_default`: input `images` float32 [None, H, W, C] scaled to [0, 1]; outputs
`logits` and `probabilities`, float32 [None, classes]. For a model that outputs logits,
`probabilities` is their softmax; for a model that outputs probabilities (it ends in a softmax),
`probabilities` is that output and `logits` is its natural log (softmax(logits) gives the
probabilities back; a probability that underflowed to 0 has logit -inf).
"""

from __future__ import annotations

import contextlib
import errno
import os
import warnings
from typing import Iterator, Union

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_lottery.errors import first_line
from tf_lottery.export.layout import INPUT_NAME, OUTPUT_NAMES, SIGNATURE


class _Serving(tf.Module):
    """What the SavedModel holds: the variables, grouped per layer for verification, and `serve`.

    The Keras model is only captured by `serve`, not tracked, so no Keras metadata is saved.
    """

    def __init__(self, model: keras.Model, input_shape: tuple, model_output: str):
        super().__init__(name="tf_lottery_ticket")
        self.layer_variables = {
            layer.name: {w.name.split("/")[-1].split(":")[0]: w for w in layer.weights}
            for layer in model.layers
            if layer.weights
        }
        spec = tf.TensorSpec([None, *input_shape], tf.float32, name=INPUT_NAME)
        logits_name, probabilities_name = OUTPUT_NAMES

        @tf.function(input_signature=[spec])
        def serve(images):
            outputs = tf.cast(model(images, training=False), tf.float32)
            if model_output == probabilities_name:
                return {logits_name: tf.math.log(outputs), probabilities_name: outputs}
            return {logits_name: outputs, probabilities_name: tf.nn.softmax(outputs)}

        self.serve = serve


@contextlib.contextmanager
def disk_errors(path: str) -> Iterator[None]:
    """A full disk while writing version `path`, as an OSError naming `path` (not a temporary inside it).

    TensorFlow reports it as a ResourceExhaustedError ("No space left on device"); Python as OSError.
    """
    try:
        yield
    except tf.errors.ResourceExhaustedError as e:
        if "No space left on device" not in str(e):
            raise
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path) from e
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT) or e.filename == path:
            raise
        raise OSError(e.errno, e.strerror, path) from e


def save(model: keras.Model, input_shape: tuple, path: str, model_output: str) -> None:
    """The SavedModel of `model` in `path`, its signature returning logits and probabilities."""
    module = _Serving(model, input_shape, model_output)
    tf.saved_model.save(module, path, signatures={SIGNATURE: module.serve})


def predict(fn, images: np.ndarray, batch: int = 256) -> np.ndarray:
    parts = [fn(images[i : i + batch]) for i in range(0, len(images), batch)]
    return np.concatenate(parts, axis=0)


def tflite_bytes(dense_saved_model: str) -> bytes:
    """model.tflite of a dense SavedModel, with TFLite's sparsity optimization (pruned weights stored sparse)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(dense_saved_model, signature_keys=[SIGNATURE])
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    return converter.convert()


def tflite_outputs(content_or_path: Union[bytes, str], images: np.ndarray, output: str = OUTPUT_NAMES[0]) -> np.ndarray:
    """One output (`logits` or `probabilities`) of a TFLite export through its `serving_default` runner."""
    with warnings.catch_warnings():  # TF 2.18+ warns that tf.lite moves to ai_edge_litert; same interpreter
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated", category=UserWarning)
        if isinstance(content_or_path, str):
            interpreter = tf.lite.Interpreter(model_path=content_or_path)
        else:
            interpreter = tf.lite.Interpreter(model_content=content_or_path)
    runner = interpreter.get_signature_runner(SIGNATURE)
    return predict(lambda x: runner(**{INPUT_NAME: x})[output], images)


def tflite_sparsity(content_or_path: Union[bytes, str]) -> dict:
    """The tensors a TFLite file stores sparse: per tensor its shape and block (e.g. [1, 4]: TFLite's 1x4
    blocks along the input dimension, which its optimized sparse fully-connected kernel runs; [1, 1]: random
    sparsity, which only the reference kernel runs)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated", category=UserWarning)
        if isinstance(content_or_path, str):
            interpreter = tf.lite.Interpreter(model_path=content_or_path)
        else:
            interpreter = tf.lite.Interpreter(model_content=content_or_path)
    out = {}
    for detail in interpreter.get_tensor_details():
        sparsity = detail.get("sparsity_parameters") or {}
        metadata = sparsity.get("dim_metadata") or []
        if not metadata:
            continue
        shape = [int(d) for d in detail["shape"]]
        block = [1] * len(shape)
        for axis, extra in zip(sparsity.get("block_map", []), metadata[len(shape):]):
            block[int(axis)] = int(extra.get("dense_size", 1))
        out[detail["name"]] = {"shape": shape, "block": block}
    return out


def tflite_logits(content_or_path: Union[bytes, str], images: np.ndarray) -> np.ndarray:
    """Logits of a TFLite export through its `serving_default` signature runner."""
    return tflite_outputs(content_or_path, images, OUTPUT_NAMES[0])


def check_warmup_available() -> None:
    """Refuse warmup before anything is written when tensorflow-serving-api is not installed."""
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2  # noqa: F401
    except ImportError as e:
        raise ValueError(
            f"warmup requests need tensorflow-serving-api ({first_line(e)}); pip install 'tf-lottery[serving]'"
        ) from e


def write_warmup(path: str, images: np.ndarray, count: int, model_name: str) -> None:
    """`count` PredictionLog records of `serving_default` requests, cycling through `images`."""
    check_warmup_available()
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

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


def count_warmup(path: str) -> int:
    return sum(1 for _ in tf.data.TFRecordDataset(path)) if os.path.exists(path) else 0
