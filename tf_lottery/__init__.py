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

from tf_lottery.callbacks import LotteryCallback  # noqa: E402
from tf_lottery.config import (  # noqa: E402
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    PruningConfig,
    RuntimeConfig,
    TrainingConfig,
    from_preset,
)
from tf_lottery.lottery import Ticket, find_ticket  # noqa: E402
from tf_lottery.pruning import masked_optimizer, strip, wrap  # noqa: E402

__all__ = [
    "DataConfig",
    "ExperimentConfig",
    "LotteryCallback",
    "ModelConfig",
    "PruningConfig",
    "RuntimeConfig",
    "Ticket",
    "TrainingConfig",
    "find_ticket",
    "from_preset",
    "masked_optimizer",
    "strip",
    "wrap",
]
