"""Which Keras a model comes from, told without importing any Keras (nor TensorFlow).

TF-MOT wraps tf-keras (Keras 2) models only; a Keras 3 model must be carried over first
(`tf_lottery.keras3`). Both `masking.pruning` (to refuse a Keras 3 model in one line) and
`tf_lottery.keras3` (which re-exports `is_keras3_model`) need to tell them apart, and keras3
builds on masking, so the check lives here, below both.
"""

from __future__ import annotations

import sys


def is_keras3_model(obj) -> bool:
    """True when `obj` is a Keras 3 model (`keras.Model`, also reached as tf.keras in Keras 3).

    Keras is not imported here: if the user has not imported it, `obj` cannot be one of its models.

    Args:
        obj: anything.

    Returns:
        Whether `obj` is an instance of Keras 3's `keras.Model`.
    """
    keras = sys.modules.get("keras")
    if keras is None or not str(getattr(keras, "__version__", "")).startswith("3."):
        return False
    return isinstance(obj, keras.Model)
