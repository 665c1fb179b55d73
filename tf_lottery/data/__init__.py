"""Data for ticket searches: the datasets and their loaders, raw files, and a search's inputs.

`datasets` loads MNIST, Fashion-MNIST and CIFAR-10 as `Splits`; `raw_files` reads IDX and
CIFAR-10 binary files (NumPy only); `inputs` turns `Splits` or arrays into a search's tf.data
pipelines. The public names of `datasets` are re-exported here (`tf_lottery.data.Splits`,
`tf_lottery.data.load`, ...).

Both load on first use (PEP 562): `datasets` imports TensorFlow and TFDS, while
`tf_lottery.data.raw_files` must stay importable without them (lottery-report reads
`source_line`).
"""

import importlib

# datasets' public names (its own and those it re-exports from raw_files).
_DATASETS_NAMES = (
    "DATASETS", "EVAL_BATCH_SIZE", "OFFLINE_ENV", "SOURCES", "Splits", "describe", "fingerprint", "fingerprint_arrays",
    "load", "read_cifar10_bin", "read_idx", "source_line",
)
_SUBMODULES = ("datasets", "inputs", "raw_files")

__all__ = list(_DATASETS_NAMES) + list(_SUBMODULES)


def __getattr__(name):
    if name in _DATASETS_NAMES:
        return getattr(importlib.import_module(f"{__name__}.datasets"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
