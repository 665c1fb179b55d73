"""The ticket search: iterative magnitude pruning with rewinding, and the run directory it lives in.

`run_directory`, `run_checks` and `checkpoints` own the run directory (the only state between
stages, so a search resumes where it stopped); `training` trains one network; `levels` is the
level loop; `find` is `find_ticket`, which sets a search up from what a user passes; `ticket` is
the `Ticket` it returns; `callbacks` is `LotteryCallback` for a user's own `fit`; `building`,
`distribute` and `progress` build the model, pick the distribution strategy and draw the bar.

Submodules load on first use (PEP 562), so `tf_lottery.search.distribute.WorkerLostError` works
without an import.
"""

import importlib

_SUBMODULES = (
    "building", "callbacks", "checkpoints", "distribute", "find", "levels", "progress", "run_checks", "run_directory",
    "ticket", "training",
)

__all__ = list(_SUBMODULES)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
