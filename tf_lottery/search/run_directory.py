"""The run directory: every read and write of it, validated and crash-safe (its paths: `run_layout`).

The files are the only state between stages: what is on disk is done, and everything read back is
checked (types, keys, shapes, 0/1 masks, counts) before it is used. Files are written to a
temporary name carrying this tool's marker and the writer's pid, fsynced, and renamed; resuming
removes only such names. Links inside a run are refused, so a run never writes outside itself.
This module imports no TensorFlow (lottery-report reads runs through it).
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
from typing import Mapping, Optional, Sequence

import numpy as np

from tf_lottery import config as config_lib
from tf_lottery.config import ExperimentConfig
from tf_lottery.files import (  # noqa: F401  (re-exported: the run's own file helpers)
    CorruptRunError, atomic_directory, atomic_write_bytes, atomic_write_json, corrupt, is_temporary, load_arrays,
    load_json, refuse_link, remove_directory, save_arrays,
)
from tf_lottery.search.run_checks import (  # noqa: F401
    check_value, check_history, check_instability, check_masks, check_ours, check_row, check_stage, check_weights,
    select_round, stage_row,
)

from tf_lottery.search.run_layout import MAIN, STAGE_NAME, RunLayout  # noqa: F401  (re-exported)
from tf_lottery.search.run_lock import RunLock, RunLockedError  # noqa: F401  (re-exported)

CSV_COLUMNS = (
    "round",
    "weights_remaining",
    "test_accuracy",
    "early_stop_iteration",
    "early_stop_test_accuracy",
    "seconds",
)
CONTROL_CSV_METRICS = ("test_accuracy", "early_stop_iteration", "early_stop_test_accuracy")


# -- the run directory ---------------------------------------------------------------------------
SUMMARY_EXTRAS = ("data_source", "stop")  # record entries summary.json repeats, when the run has them


def summary_of(record: dict, rows: list[dict]) -> dict:
    """summary.json's content: the run's config, where its data came from, why it stopped, and its rows."""
    out = {"version": config_lib.CONFIG_VERSION, "config": record["config"],
           "fingerprint": record["fingerprint"]}
    out.update({key: record[key] for key in SUMMARY_EXTRAS if record.get(key) is not None})
    out["rounds"] = rows
    return out


class RunDirectory(RunLayout):
    """One run's validated reads and crash-safe writes, at the paths of its `RunLayout`, under its lock."""

    def __init__(self, path: str):
        super().__init__(path)
        self._lock = RunLock(self.path)

    @classmethod
    def existing(cls, run_dir, name: str = "run_dir") -> "RunDirectory":
        """The run at `run_dir` (a str or PathLike), refused in one line unless it is a directory holding a
        lottery-find run: the check every reader of a finished run (analysis, export) starts with."""
        if isinstance(run_dir, os.PathLike):
            run_dir = os.fspath(run_dir)
        if not isinstance(run_dir, str) or not os.path.isdir(run_dir):
            raise ValueError(f"{name} {run_dir!r} does not exist or is not a directory")
        run = cls(run_dir)
        if not run.exists():
            raise ValueError(f"{name} {run_dir!r} holds no lottery-find run (no config.json)")
        return run

    # -- creating, locking, checking -------------------------------------------------------------
    def check_new(self) -> None:
        """Refuse a path that cannot hold a new run, before anything is written."""
        if os.path.lexists(self.path) and not os.path.isdir(self.path):
            raise ValueError(f"output_dir {self.path!r} exists and is not a directory")
        if os.path.isdir(self.path) and not self.exists() and os.listdir(self.path):
            raise ValueError(
                f"output_dir {self.path!r} is not empty and holds no tf_lottery run (no config.json); "
                "allowed: a new or empty directory, or an existing run to resume"
            )

    def create(self, record: dict) -> None:
        """Make the directory, take the lock and write config.json (a new run)."""
        self.check_new()
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as e:
            raise ValueError(f"output_dir {self.path!r} cannot be created ({e.strerror})") from e
        self.lock()
        atomic_write_json(self.config_file, record)

    def lock(self) -> None:
        """Take the run's exclusive lock (`RunLock`), or refuse naming the process that holds it."""
        self._lock.lock()

    def unlock(self) -> None:
        self._lock.unlock()

    def check_no_links(self) -> None:
        """Refuse a run that holds symbolic links (they could make it write or delete elsewhere)."""
        for root, dirs, files in os.walk(self.path):
            for name in dirs + files:
                full = os.path.join(root, name)
                if os.path.islink(full):
                    raise CorruptRunError(
                        f"{full} is a symbolic link; tf_lottery refuses links inside a run directory (it would "
                        "write outside the run): replace it with a real file or directory"
                    )

    def remove_temporaries(self) -> list[str]:
        """Delete what a killed writer of this tool left: only names carrying its marker."""
        removed = []
        for root, dirs, files in os.walk(self.path):
            for name in list(dirs) + files:
                full = os.path.join(root, name)
                if is_temporary(name) and not os.path.islink(full):
                    if os.path.isdir(full):
                        shutil.rmtree(full)
                        dirs.remove(name)
                    else:
                        os.unlink(full)
                    removed.append(full)
        return removed

    # -- config.json --------------------------------------------------------------------------
    def read_record(self) -> dict:
        """config.json, checked to be a tf_lottery run record, with its config upgraded to today's names."""
        path = self.config_file
        record = load_json(path)
        if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
            raise corrupt(path, "is not a tf_lottery run record (no 'config' object)", "use another output_dir")
        check_ours(path, record["config"], record.get("fingerprint"))
        version = record.get("version", 1)
        if not isinstance(version, int) or version > config_lib.CONFIG_VERSION:
            raise corrupt(path, f"has layout version {version!r}, this tf_lottery reads up to {config_lib.CONFIG_VERSION}",
                           "use a newer tf_lottery")
        try:
            record = dict(record, config=config_lib.upgrade(record["config"], version), version=version)
            record["experiment"] = ExperimentConfig.from_dict(record["config"])
        except (TypeError, ValueError) as e:
            raise corrupt(path, f"is not a valid tf_lottery config ({e})", "use another output_dir") from e
        return record

    # -- arrays -------------------------------------------------------------------------------
    # `name` is a file of the run (initial.npz), or a full path from one of the path functions above.
    def save_weights(self, name: str, values: list[np.ndarray]) -> None:
        save_arrays(self.file(name), {f"w{i:04d}": v for i, v in enumerate(values)})

    def load_weights(self, name: str, shapes: Sequence[tuple]) -> Optional[list[np.ndarray]]:
        path = self.file(name)
        if not os.path.lexists(path):
            return None
        arrays = load_arrays(path)
        if sorted(arrays) != [f"w{i:04d}" for i in range(len(arrays))]:
            raise corrupt(path, "is not a weight list written by tf_lottery")
        return check_weights(path, [arrays[k] for k in sorted(arrays)], shapes)

    def save_masks(self, round_index: int, masks: Mapping[str, np.ndarray]) -> None:
        save_arrays(self.masks_file(round_index), masks)

    def load_masks(self, round_index: int, shapes, counts=None, total=None) -> Optional[dict[str, np.ndarray]]:
        path = self.masks_file(round_index)
        if not os.path.lexists(path):
            return None
        return check_masks(path, load_arrays(path), shapes, counts, total)

    def save_dense_kernels(self, kernels: Mapping[str, np.ndarray]) -> None:
        save_arrays(self.file("dense_kernels.npz"), kernels)

    def load_dense_kernels(self, shapes) -> Optional[dict[str, np.ndarray]]:
        path = self.file("dense_kernels.npz")
        if not os.path.lexists(path):
            return None
        kernels = load_arrays(path)
        if set(kernels) != set(shapes) or any(tuple(kernels[n].shape) != tuple(s) for n, s in shapes.items()):
            raise corrupt(path, "holds kernels of another model")
        return kernels

    # -- stage results ----------------------------------------------------------------------
    def save_stage(self, round_index: int, stage: str, result: dict) -> None:
        atomic_write_json(self.stage_file(round_index, stage), result)

    def load_stage(self, round_index: int, stage: str, total_iterations: Optional[int] = None) -> Optional[dict]:
        path = self.stage_file(round_index, stage)
        if not os.path.lexists(path):
            return None
        return check_stage(path, load_json(path), total_iterations)

    # -- instability results ----------------------------------------------------------------
    def load_instability(self, level: int, rewind_step: int, same_data_order: bool = False,
                         variant: str = "") -> Optional[dict]:
        """path.json of one (level, rewind_step, variant), checked; None when absent."""
        path = os.path.join(self.instability_dir(level, rewind_step, same_data_order, variant), "path.json")
        if not os.path.lexists(path):
            return None
        return check_instability(path, load_json(path), level, rewind_step, variant)

    def load_progress(self, total_iterations: int) -> Optional[dict]:
        """The state of the stage cut off mid-way, checked against the training budget."""
        path = os.path.join(self.progress_dir, "state.json")
        if not os.path.lexists(path):
            return None
        state = load_json(path)
        fix = f"delete {self.progress_dir} to restart that network from its beginning"
        keys = {"round": int, "stage": str, "iteration": int, "history": list, "seconds": float}
        if not isinstance(state, dict) or set(state) != set(keys):
            raise corrupt(path, f"is not a progress record (keys {sorted(state) if isinstance(state, dict) else '?'})", fix)
        for key, kind in keys.items():
            check_value(path, key, state[key], kind, fix)
        if not 0 < state["iteration"] < total_iterations:
            raise corrupt(path, f"says iteration {state['iteration']}, outside 1..{total_iterations - 1}", fix)
        if state["round"] < 0 or not STAGE_NAME.match(state["stage"]) or not math.isfinite(state["seconds"]):
            raise corrupt(path, "names no valid round and stage", fix)
        history = check_history(path, state["history"], state["iteration"])
        if history and history[-1]["iteration"] != state["iteration"]:
            raise corrupt(path, "has a history that does not end at its iteration", fix)
        return state

    def clear_progress(self) -> None:
        """Drop the mid-training checkpoint: whole or gone at every instant (a kill mid-way must not
        leave a state.json whose checkpoint files were already deleted)."""
        remove_directory(self.progress_dir)

    # -- summaries --------------------------------------------------------------------------
    def write_summary(self, record: dict, rows: list[dict]) -> None:
        """summary.json and rounds.csv from the rows of every finished round."""
        atomic_write_json(self.file("summary.json"), summary_of(record, rows))
        controls = sorted({c for r in rows for c in r.get("controls", {})})
        columns = list(CSV_COLUMNS) + [f"{c}_{m}" for c in controls for m in CONTROL_CSV_METRICS]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            row = {k: r.get(k) for k in CSV_COLUMNS}
            for c, metrics in r.get("controls", {}).items():
                for m in CONTROL_CSV_METRICS:
                    row[f"{c}_{m}"] = metrics.get(m)
            writer.writerow(row)
        atomic_write_bytes(self.file("rounds.csv"), out.getvalue().encode())

    def read_summary(self) -> dict:
        """summary.json of a finished or running search, checked row by row."""
        path = self.file("summary.json")
        if not os.path.isfile(path):
            raise ValueError(f"{self.path!r} is not a tf_lottery run directory (no summary.json)")
        summary = load_json(path)
        fix = "rerun lottery-find with the same flags to rebuild it"
        if not isinstance(summary, dict) or not isinstance(summary.get("config"), dict) or not isinstance(summary.get("rounds"), list):
            raise corrupt(path, "is not a tf_lottery summary (needs 'config' and 'rounds')", fix)
        for row in summary["rounds"]:
            check_row(path, row, fix)
        return summary
