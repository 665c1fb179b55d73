"""The IMP search rewound to k that the instability analysis finds one mask per k with (`--mask_per_k`).

Frankle, Dziugaite, Roy & Carbin (ICML 2020) study the subnetworks that IMP finds when every
round rewinds to iteration k: one search per k. Each such search is a run directory of its own
(`RunDirectory.per_k_search_dir`, inside the analysed run's instability/ folder), so it resumes,
is checked and is read like any lottery-find run. Its settings are the analysed run's with
rewind_step = k, weight rewinding, and no controls.

The dense training is shared, not repeated: round 0 of a search trains theta_0 for T iterations
whatever k is (k only decides which iteration is recorded as the rewind point), so the search is
seeded with the analysed run's initial.npz, dense kernels and round_00/, and with theta_k (the
dense network at iteration k of that same training) as its rewind.npz. From there its rounds
1..L train T - k iterations each from theta_k, the schedule continuing from k, like any search
rewinding to k.
"""

from __future__ import annotations

import os
import shutil

from tf_lottery import config as config_lib
from tf_lottery.files import atomic_directory
from tf_lottery.search.levels import Search
from tf_lottery.search.run_directory import RunDirectory


def check_imp(config: config_lib.ExperimentConfig, path: str) -> None:
    """Refuse, in one line, a run whose masks are not IMP's: one mask per k means IMP rewound to each k."""
    pruning_config = config.pruning
    if pruning_config.pruning_strategy != "magnitude" or pruning_config.schedule != "iterative":
        raise ValueError(
            f"mask_per_k needs a run of iterative magnitude pruning; {path} uses pruning_strategy="
            f"{pruning_config.pruning_strategy!r}, schedule={pruning_config.schedule!r} (allowed: an iterative "
            "search by magnitude, whose masks depend on the rewind step)")


def config_for(config: config_lib.ExperimentConfig, rewind_step: int) -> config_lib.ExperimentConfig:
    """The analysed run's settings, rewinding every round to `rewind_step` by weight rewinding, no controls."""
    return config_lib.override(config, rewind_step=rewind_step, retrain="weight_rewind", controls=[])


def _record(parent_record: dict, config: config_lib.ExperimentConfig) -> dict:
    record = {key: value for key, value in parent_record.items() if key != "experiment"}
    record.update(version=config_lib.CONFIG_VERSION, config=config.to_dict(), fingerprint=config.fingerprint())
    return record


def open_search(parent: Search, parent_record: dict, rewind_step: int, theta_k: list) -> tuple[Search, dict]:
    """The search rewound to `rewind_step`, created and seeded with the parent's dense training, or
    reopened (checked against these settings, every file read back) and locked. Unlock with `.run.unlock()`."""
    config = config_for(parent.config, rewind_step)
    run = RunDirectory(parent.run.per_k_search_dir(rewind_step))
    record = _record(parent_record, config)
    if run.exists():
        run.lock()
        try:
            _check_settings(run, config)
        except ValueError:
            run.unlock()
            raise
    else:
        run.create(record)  # takes the lock
    try:
        _seed(parent, run, theta_k)
        search = Search(parent.model, config, parent.inputs, run, parent.strategy, parent.objective, (),
                        parent.log, parent.progress)
        search.verify()
        run.remove_temporaries()
    except BaseException:
        run.unlock()
        raise
    return search, record


def _check_settings(run: RunDirectory, config: config_lib.ExperimentConfig) -> None:
    """Refuse a search on disk made with other settings than the ones its parent run gives it (an edited or
    copied folder): its masks would not be IMP's of this run."""
    diff = config_lib.differing_fields(run.read_record()["experiment"], config)
    if diff:
        raise ValueError(f"{run.path} holds a search with other settings ({', '.join(diff)}) than the run it "
                         f"belongs to; delete {run.path} to find its masks again")


def _seed(parent: Search, run: RunDirectory, theta_k: list) -> None:
    """Write what the search shares with its parent, where it is missing (the same bytes every time)."""
    if run.load_weights("initial.npz", parent.weight_shapes) is None:
        run.save_weights("initial.npz", parent.theta_0())
    if run.load_weights("rewind.npz", parent.weight_shapes) is None:
        run.save_weights("rewind.npz", theta_k)
    if run.load_dense_kernels(parent.shapes) is None:
        run.save_dense_kernels(parent.dense_kernels())
    if not os.path.lexists(run.round_dir(0)):
        with atomic_directory(run.round_dir(0)) as staging:
            for name in os.listdir(parent.run.round_dir(0)):
                source = os.path.join(parent.run.round_dir(0), name)
                (shutil.copytree if os.path.isdir(source) else shutil.copy2)(source, os.path.join(staging, name))


def masks_through(search: Search, record: dict, last_level: int) -> dict[int, dict]:
    """Train the search's rounds up to `last_level` (those not on disk) and return their masks by level."""
    out = {}
    for level in range(last_level + 1):
        out[level] = search.masks(level)
        if level < last_level:  # the last level's mask needs only the round before it
            search.train_ticket(level, out[level])
    search.write_summary(record)
    return out


def saved_masks(parent: Search, rewind_step: int, level: int):
    """Round `level`'s mask of the search rewound to `rewind_step` if it is on disk (checked), else None."""
    run = RunDirectory(parent.run.per_k_search_dir(rewind_step))
    if not run.exists():
        return None
    config = config_for(parent.config, rewind_step)
    _check_settings(run, config)
    search = Search(parent.model, config, parent.inputs, run, parent.strategy, parent.objective, (),
                    parent.log, parent.progress)
    return search.load_masks(level)


