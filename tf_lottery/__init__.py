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

# The public API loads lazily (PEP 562), so `import tf_lottery` only sets the environment and
# tools that need no TensorFlow (lottery-report) start fast.
_EXPORTS = {
    "LotteryCallback": "tf_lottery.callbacks",
    "DataConfig": "tf_lottery.config",
    "ExperimentConfig": "tf_lottery.config",
    "ModelConfig": "tf_lottery.config",
    "PruningConfig": "tf_lottery.config",
    "RuntimeConfig": "tf_lottery.config",
    "TrainingConfig": "tf_lottery.config",
    "from_preset": "tf_lottery.config",
    "Ticket": "tf_lottery.lottery",
    "find_ticket": "tf_lottery.lottery",
    "masked_optimizer": "tf_lottery.pruning",
    "strip": "tf_lottery.pruning",
    "wrap": "tf_lottery.pruning",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tf_lottery' has no attribute {name!r}")
