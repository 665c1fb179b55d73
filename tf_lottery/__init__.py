"""tf_lottery: find winning lottery tickets in Keras models with TF-MOT pruning wrappers.

tf_lottery runs on tf-keras (Keras 2), which TF-MOT needs, and imports it as `tf_keras`;
Keras 3 models are carried over by `tf_lottery.keras3`. Importing tf_lottery does not choose
the user's Keras: `tf.keras` stays whatever TensorFlow picks from the user's own
TF_USE_LEGACY_KERAS, whichever of TensorFlow, Keras and tf_lottery is imported first
(TF-MOT is imported through `tf_lottery._tfmot`, which keeps its switch to itself).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

# The public API loads lazily (PEP 562), so `import tf_lottery` loads no TensorFlow and
# tools that need none (lottery-report) start fast.
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
