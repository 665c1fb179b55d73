"""Import TF-MOT on tf-keras without switching the user's `tf.keras` to tf-keras.

TF-MOT's `compat.py` sets TF_USE_LEGACY_KERAS=1 for the rest of the process and then reads
`tf.keras`; `prune_registry.py` reads `tf.compat.v1.keras` and `tf.compat.v2.keras`. Those are
TensorFlow's lazy loaders, which pick Keras 3 or tf-keras from TF_USE_LEGACY_KERAS the first
time they are touched, so a plain `import tensorflow_model_optimization` would make `tf.keras`
tf-keras for the whole process. Here TF-MOT is imported while those three attributes point at
tf-keras's own API modules; afterwards the user's loaders (resolved or not) and the user's
TF_USE_LEGACY_KERAS are put back, so `tf.keras` is whatever it would have been without us.
TF-MOT itself ends up bound to `tf_keras.api._v2.keras`, exactly as with TF_USE_LEGACY_KERAS=1.

Import TF-MOT only through this module (`from tf_lottery.masking.tfmot import tfmot`).
"""

import os
import sys


def _import_tfmot():
    if "tensorflow_model_optimization" in sys.modules:
        # Already imported by the user (or by us): nothing to protect any more.
        import tensorflow_model_optimization

        return tensorflow_model_optimization
    import tensorflow as tf
    from tf_keras.api._v1 import keras as tf_keras_v1
    from tf_keras.api._v2 import keras as tf_keras_v2

    env = os.environ.get("TF_USE_LEGACY_KERAS")
    # vars() reads the attribute without resolving a lazy loader.
    swaps = [(tf, tf_keras_v2), (tf.compat.v2, tf_keras_v2), (tf.compat.v1, tf_keras_v1)]
    saved = [(module, vars(module)["keras"]) for module, _ in swaps]
    try:
        for module, replacement in swaps:
            setattr(module, "keras", replacement)
        import tensorflow_model_optimization
    finally:
        for module, original in saved:
            setattr(module, "keras", original)
        if env is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = env
    return tensorflow_model_optimization


tfmot = _import_tfmot()
