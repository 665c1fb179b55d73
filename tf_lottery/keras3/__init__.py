"""Carry Sequential and functional models between Keras 3 and tf-keras (Keras 2), which TF-MOT needs.

`convert` is the public side (`to_tf_keras`, `to_keras3`, `is_keras3_model`), re-exported here;
`graph` is its machinery (rebuilding a model layer by layer from its graph). Importing this
package imports neither Keras 3 nor TensorFlow.

    from tf_lottery import keras3

    legacy = keras3.to_tf_keras(model)      # a tf_keras model, same weights
    back = keras3.to_keras3(legacy, template=model)
"""

from tf_lottery.keras3.convert import (
    KERAS3, SUPPORTED_ACTIVATIONS, SUPPORTED_LAYERS, SUPPORTED_POLICIES, TF_KERAS, Rebuild, class_path, copy_weights,
    is_keras3_model, masked_weights, to_keras3, to_tf_keras,
)

__all__ = [
    "KERAS3", "SUPPORTED_ACTIVATIONS", "SUPPORTED_LAYERS", "SUPPORTED_POLICIES", "TF_KERAS", "Rebuild", "class_path",
    "copy_weights", "is_keras3_model", "masked_weights", "to_keras3", "to_tf_keras",
]
