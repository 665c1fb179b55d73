"""Branches, registered by name: the ticket (`main`) and what trains beside it at each pruned level.

Adding one is a new module defining `BRANCH = Branch(...)` plus one line in `_MODULES`.
"""

from __future__ import annotations

import importlib

from tf_lottery.branches.base import Branch, BranchInputs

MAIN = "main"
_MODULES = {
    "main": "tf_lottery.branches.ticket",
    "random_reinit": "tf_lottery.branches.random_reinit",
    "random_prune": "tf_lottery.branches.random_prune",
    "sign_reinit": "tf_lottery.branches.sign_reinit",
    "inverted": "tf_lottery.branches.inverted",
}


def names() -> list[str]:
    """Every branch, the ticket first."""
    return list(_MODULES)


def controls() -> list[str]:
    """The branches that can be asked for as controls (all but the ticket)."""
    return [n for n in _MODULES if n != MAIN]


def get(name: str) -> Branch:
    """The branch registered under `name`; one-line ValueError listing the known ones if none."""
    if name not in _MODULES:
        raise ValueError(f"unknown control {name!r}; allowed: {', '.join(controls())}")
    return importlib.import_module(_MODULES[name]).BRANCH


def stage_seed(seed: int, round_index: int, name: str) -> int:
    """The seed of one stage: distinct per (run seed, round, branch)."""
    return (seed * 1009 + round_index * 10 + get(name).seed_offset) % (2**31 - 1)


__all__ = ["Branch", "BranchInputs", "MAIN", "controls", "get", "names", "stage_seed"]
