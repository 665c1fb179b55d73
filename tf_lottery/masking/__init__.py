"""Masks and the TF-MOT wrappers that hold them, with no search around them.

`masks` and `granularity` are the pure mask math (NumPy: rank, keep, count); `unit_graph`
traces which units of a model prune together; `pruning` wraps tf-keras models in TF-MOT
wrappers (through `tfmot`, which keeps TF-MOT's Keras switch to itself) and reads and sets
their masks (`keras_kind` tells Keras 3 models from tf-keras ones, importing neither); `scoring`
scores weights at initialization (SNIP, GraSP, SynFlow).
Imports only tf_lottery's top level (config, errors, files).

Submodules load on first use (PEP 562), so `tf_lottery.masking.pruning` works without an import.
"""

import importlib

_SUBMODULES = ("granularity", "keras_kind", "masks", "pruning", "scoring", "tfmot", "unit_graph")

__all__ = list(_SUBMODULES)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
