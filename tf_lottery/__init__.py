"""tf_lottery: find winning lottery tickets in Keras models with TF-MOT pruning wrappers.

tf_lottery runs on tf-keras (Keras 2), which TF-MOT needs, and imports it as `tf_keras`;
Keras 3 models are carried over by `tf_lottery.keras3`. Importing tf_lottery does not choose
the user's Keras: `tf.keras` stays whatever TensorFlow picks from the user's own
TF_USE_LEGACY_KERAS, whichever of TensorFlow, Keras and tf_lottery is imported first
(TF-MOT is imported through `tf_lottery.masking.tfmot`, which keeps its switch to itself).

The public API loads lazily (PEP 562): `import tf_lottery` imports nothing heavy, so tools that
need no TensorFlow (lottery-report) start fast, and every submodule (`tf_lottery.data`,
`tf_lottery.export`, ...) is reachable as an attribute.
"""

import importlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.2.0"

_EXPORTS = {
    "LotteryCallback": "tf_lottery.search.callbacks",
    "DataConfig": "tf_lottery.config",
    "ExperimentConfig": "tf_lottery.config",
    "ModelConfig": "tf_lottery.config",
    "PruningConfig": "tf_lottery.config",
    "RuntimeConfig": "tf_lottery.config",
    "TrainingConfig": "tf_lottery.config",
    "from_preset": "tf_lottery_models",
    "override": "tf_lottery.config",
    "Ticket": "tf_lottery.search.ticket",
    "find_ticket": "tf_lottery.search.find",
    "custom_objects": "tf_lottery.masking.pruning",
    "load_model": "tf_lottery.masking.pruning",
    "masked_optimizer": "tf_lottery.masking.pruning",
    "strip": "tf_lottery.masking.pruning",
    "wrap": "tf_lottery.masking.pruning",
}
_SUBMODULES = (
    "analysis", "branches", "config", "data", "errors", "export", "files", "keras3", "masking", "report", "search",
    "strategies",
)

__all__ = sorted(_EXPORTS) + list(_SUBMODULES)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"tf_lottery.{name}")
    raise AttributeError(f"module 'tf_lottery' has no attribute {name!r}")
