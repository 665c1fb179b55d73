"""Instability analysis (linear mode connectivity, Frankle et al. 2020) of finished searches.

`linear_path` holds the math (error along the straight path between two trained networks);
`instability` analyzes a run (lottery-instability): trains the copies, walks their paths and
records them in the run directory; `per_k_search` finds each rewind step k's own mask with an
IMP search rewound to k.

Submodules load on first use (PEP 562), so `tf_lottery.analysis.instability.analyze` works
without an import.
"""

import importlib

_SUBMODULES = ("instability", "linear_path", "per_k_search")

__all__ = list(_SUBMODULES)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
