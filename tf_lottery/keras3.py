"""Carrying models between Keras 3 and tf-keras (placeholder until the converter lands)."""

import sys


def is_keras3_model(obj) -> bool:
    """True for a Keras 3 model (without importing keras when the user has not)."""
    keras = sys.modules.get("keras")
    if keras is None or not hasattr(keras, "Model"):
        return False
    try:
        return isinstance(obj, keras.Model) and str(getattr(keras, "__version__", "")).startswith("3")
    except TypeError:
        return False


def to_tf_keras(model):
    raise ValueError("Keras 3 models are not supported yet; build the model with tf_keras")
