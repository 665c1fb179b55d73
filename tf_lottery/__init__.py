"""tf_lottery: find winning lottery tickets in Keras models with TF-MOT pruning wrappers.

Importing this package sets TF_USE_LEGACY_KERAS=1 before TensorFlow loads, because
TF-MOT supports only tf-keras (Keras 2), not Keras 3.
"""

import os
import sys
import warnings

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    warnings.warn(
        "tf_lottery: TensorFlow was imported before tf_lottery without TF_USE_LEGACY_KERAS=1, "
        "so tf.keras is Keras 3. tf_lottery and TF-MOT use tf-keras (import tf_keras); "
        "models built with Keras 3 are refused. Import tf_lottery first or export "
        "TF_USE_LEGACY_KERAS=1.",
        stacklevel=2,
    )
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
