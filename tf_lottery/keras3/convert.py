"""Carry Sequential and functional models between Keras 3 and tf-keras (Keras 2), which TF-MOT needs.

A model is rebuilt layer by layer from its graph rather than from `get_config()`: the two
Keras serialize InputLayers, dtype policies and functional graphs differently, while their
layers' own configs agree key for key once Keras-3-only keys that are inactive are dropped.
Weights are copied per layer with get_weights/set_weights, so they are equal bit for bit.
Only the layers in `SUPPORTED_LAYERS` are carried over, matched by exact class; anything
else is refused in one line before a model is built. Nothing here imports Keras 3 at module
import: `is_keras3_model` (from `tf_lottery.masking.keras_kind`) only looks at modules the user has
already imported.

Example:
    import keras
    from tf_lottery import keras3

    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    legacy = keras3.to_tf_keras(model)      # a tf_keras.Sequential, same weights
    back = keras3.to_keras3(legacy, template=model)
"""

from __future__ import annotations

import numpy as np

from tf_lottery.keras3.graph import (  # noqa: F401  (re-exported)
    KERAS3, TF_KERAS, SUPPORTED_ACTIVATIONS, SUPPORTED_LAYERS, SUPPORTED_POLICIES, class_path, masked_weights,
    Rebuild, copy_weights,
)
from tf_lottery.masking.keras_kind import is_keras3_model  # noqa: F401  (re-exported)

def to_tf_keras(model):
    """Rebuild a Keras 3 Sequential or functional model as a tf-keras model with the same weights.

    Layer names, layer order, input names, dtype policies and weights (bit for bit) are kept;
    predictions agree within float tolerance. A Sequential becomes a `tf_keras.Sequential`,
    a functional model a functional `tf_keras.Model`; nested Sequential/functional models
    become nested tf-keras models of the same names. Compile state is not carried over.

    Args:
        model: a built Keras 3 `keras.Sequential` or functional `keras.Model` (TensorFlow backend)
            made of the layers in `SUPPORTED_LAYERS`.

    Returns:
        A new tf-keras model; `model` is left untouched.

    Raises:
        ValueError: in one line, if `model` is not a Keras 3 model, the backend is not
            TensorFlow, the model is subclassed or not built, or a layer (named, with its class)
            or one of its settings cannot be carried over.
    """
    if not is_keras3_model(model):
        raise ValueError(f"expected a Keras 3 model, got {class_path(type(model))}")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"Keras backend is {keras.backend.backend()!r}; models can be carried over to tf-keras "
            "only from the TensorFlow backend (set KERAS_BACKEND=tensorflow)"
        )
    return Rebuild(KERAS3, TF_KERAS).model(model)


def to_keras3(tf_model, template=None):
    """A Keras 3 model with the architecture of `template` (or of `tf_model`) and `tf_model`'s weights.

    A model wrapped in TF-MOT pruning wrappers is stripped first and its masks applied to the
    copied kernels, so pruned weights are exactly 0 in the Keras 3 model.

    Args:
        tf_model: a tf-keras Sequential or functional model, possibly wrapped by
            `tf_lottery.masking.pruning.wrap`.
        template: the user's original Keras 3 model. When given, the result is
            `keras.models.clone_model(template)` (the user's exact layers and configs) holding
            `tf_model`'s weights, matched by layer name. Otherwise the Keras 3 model is rebuilt
            from `tf_model`'s graph.

    Returns:
        A new, uncompiled Keras 3 model whose predictions agree with `tf_model`'s within float
        tolerance.

    Raises:
        ValueError: in one line, if `tf_model` is not a tf-keras model, `template` is not a Keras 3
            model or its layers do not match, or a layer cannot be carried over to Keras 3.
    """
    import tf_keras

    if not isinstance(tf_model, tf_keras.Model):
        raise ValueError(f"expected a tf-keras model, got {class_path(type(tf_model))}")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"Keras backend is {keras.backend.backend()!r}; tf-keras models can be carried over to "
            "Keras 3 only with the TensorFlow backend (set KERAS_BACKEND=tensorflow)"
        )
    plain, masks = _stripped(tf_model)
    if template is None:
        return Rebuild(TF_KERAS, KERAS3, masks).model(plain)
    if not is_keras3_model(template):
        raise ValueError(f"template must be a Keras 3 model, got {class_path(type(template))}")
    result = keras.models.clone_model(template)
    _copy_by_name(plain, result, masks)
    return result


def _stripped(tf_model):
    """`tf_model` without TF-MOT wrappers, and the masks of its wrapped layers by id of the layer."""
    if not any(hasattr(layer, "pruning_vars") for layer in tf_model.layers):
        return tf_model, {}
    from tf_lottery.masking import pruning  # TF-MOT, only for a model that carries its wrappers

    # strip_pruning hands back the wrapped layers themselves, so they identify their masks.
    masks = {id(w.layer): w.pruning_vars[0][1].numpy() for w in pruning.prunable_layers(tf_model)}
    return pruning.strip(tf_model), masks


def _copy_by_name(source, target, masks) -> None:
    """Copy weights from tf-keras `source` into Keras 3 `target`, layer by layer name, into nested models too."""
    src = {layer.name: layer for layer in source.layers if layer.weights}
    dst = {layer.name: layer for layer in target.layers if layer.weights}
    if set(src) != set(dst):
        raise ValueError(
            f"template {target.name!r} does not match the tf-keras model {source.name!r}: layers with "
            f"weights only in the template: {sorted(set(dst) - set(src))}, only in the tf-keras model: "
            f"{sorted(set(src) - set(dst))}"
        )
    for name, layer in dst.items():
        if hasattr(layer, "layers"):
            _copy_by_name(src[name], layer, masks)
        else:
            copy_weights(layer, masked_weights(src[name], masks), src[name])
