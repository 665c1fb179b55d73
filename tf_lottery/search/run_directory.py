"""The run directory: its layout, and every read and write of it, validated and crash-safe.

Layout (RR is the two-digit round, STAGE is `main` for the ticket or a branch name):
  config.json                the ExperimentConfig, its fingerprint, the data's fingerprint, the model
  .lock                      held (flock) by the one process writing the run; holds its pid
  initial.npz                theta_0, every parameter before training
  rewind.npz                 the rewind point when rewind_step > 0 (otherwise theta_0 = initial.npz)
  dense_kernels.npz          the dense run's trained kernels (one-shot pruning reads them)
  round_RR/masks.npz         the mask trained in round RR
  round_RR/checkpoint/       TF checkpoint of the trained weights and masks of round RR
  round_RR/STAGE.json        metrics and evaluation history of one trained network
  in_progress/               a mid-training checkpoint of the stage now running, for resuming
  summary.json, rounds.csv   every finished round, rebuilt from the round files after each stage
  tensorboard/               scalars per stage
  instability/               the instability analysis (tf_lottery.analysis.instability), KKKKK the rewind step k:
    theta_k/k_KKKKK.npz        the dense network after k iterations of round 0's training (in_progress/: that
                               training, cut off)
    level_RR_k_KKKKK/          two copies of round RR's ticket trained from theta_k: a.npz, b.npz (weights),
                               a.json, b.json (as STAGE.json), path.json (errors along the path, barrier),
                               in_progress/ (the copy being trained)

The files are the only state between stages: what is on disk is done, and everything read back
is checked (types, keys, shapes, 0/1 masks, counts) before it is used. Files are written to a
temporary name carrying this tool's marker and the writer's pid, fsynced, and renamed; resuming
removes only such names. Links inside a run are refused, so a run never writes outside itself.
This module imports no TensorFlow (lottery-report reads runs through it).
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import math
import os
import re
import shutil
from typing import Mapping, Optional, Sequence

import numpy as np

from tf_lottery import config as config_lib
from tf_lottery.config import ExperimentConfig
from tf_lottery.files import (  # noqa: F401  (re-exported: the run's own file helpers)
    CorruptRunError, atomic_directory, atomic_write_bytes, atomic_write_json, corrupt, is_temporary, load_arrays,
    load_json, refuse_link, save_arrays,
)
from tf_lottery.search.run_checks import (  # noqa: F401
    check_value, check_history, check_instability, check_masks, check_ours, check_row, check_stage, check_weights,
    select_round, stage_row,
)

MAIN = "main"
STAGE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_ROUND_DIR = re.compile(r"^round_(\d{2,})$")
# level_RR_k_KKKKK, then what the copies train besides the run's own mask: `_mask_k` (the mask of an
# IMP search rewound to k) and a control at that mask's sparsity (`tf_lottery.analysis.instability.CONTROLS`).
_INSTABILITY_DIR = re.compile(r"^level_(\d{2,})_k_(\d{5,})((?:_mask_k)?(?:_random_prune|_random_reinit)?)$")
CSV_COLUMNS = (
    "round",
    "weights_remaining",
    "test_accuracy",
    "early_stop_iteration",
    "early_stop_test_accuracy",
    "seconds",
)
CONTROL_CSV_METRICS = ("test_accuracy", "early_stop_iteration", "early_stop_test_accuracy")


class RunLockedError(ValueError):
    """Another process is writing the run directory."""


# -- the run directory ---------------------------------------------------------------------------
SUMMARY_EXTRAS = ("data_source", "stop")  # record entries summary.json repeats, when the run has them


def summary_of(record: dict, rows: list[dict]) -> dict:
    """summary.json's content: the run's config, where its data came from, why it stopped, and its rows."""
    out = {"version": config_lib.CONFIG_VERSION, "config": record["config"],
           "fingerprint": record["fingerprint"]}
    out.update({key: record[key] for key in SUMMARY_EXTRAS if record.get(key) is not None})
    out["rounds"] = rows
    return out


class RunDirectory:
    """The paths of one run, and its validated reads and crash-safe writes."""

    def __init__(self, path: str):
        if not isinstance(path, str) or not path.strip():
            raise ValueError(f"output_dir={path!r} is empty; give a directory for the run")
        self.path = os.path.abspath(path)
        self._lock_fd: Optional[int] = None

    # -- paths (the one place that knows the layout) ------------------------------------------
    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    @property
    def config_file(self) -> str:
        return self.file("config.json")

    def round_dir(self, round_index: int) -> str:
        return self.file(f"round_{round_index:02d}")

    def masks_file(self, round_index: int) -> str:
        return os.path.join(self.round_dir(round_index), "masks.npz")

    def stage_file(self, round_index: int, stage: str) -> str:
        if not STAGE_NAME.match(stage):
            raise ValueError(f"stage name {stage!r} is not allowed in a path")
        return os.path.join(self.round_dir(round_index), f"{stage}.json")

    def checkpoint_dir(self, round_index: int) -> str:
        return os.path.join(self.round_dir(round_index), "checkpoint")

    def checkpoint_prefix(self, round_index: int) -> str:
        return os.path.join(self.checkpoint_dir(round_index), "ticket")

    @property
    def progress_dir(self) -> str:
        return self.file("in_progress")

    @property
    def progress_prefix(self) -> str:
        return os.path.join(self.progress_dir, "state")

    def tensorboard_dir(self, name: str) -> str:
        return self.file("tensorboard", name)

    @property
    def instability_root(self) -> str:
        return self.file("instability")

    def theta_k_file(self, rewind_step: int) -> str:
        return os.path.join(self.instability_root, "theta_k", f"k_{rewind_step:05d}.npz")

    def instability_dir(self, level: int, rewind_step: int, same_data_order: bool = False, variant: str = "") -> str:
        """`variant` ("mask_k", a control, or both joined by "_") names what the copies train besides the
        run's own mask; `same_data_order` (a test of the method: both copies see one data order) keeps its own folder."""
        name = f"level_{level:02d}_k_{rewind_step:05d}" + (f"_{variant}" if variant else "")
        return os.path.join(self.instability_root, name + ("_same_order" if same_data_order else ""))

    def per_k_search_dir(self, rewind_step: int) -> str:
        """The IMP search rewound to k that `lottery-instability --mask_per_k` finds its masks with (a run directory)."""
        return os.path.join(self.instability_root, f"imp_k_{rewind_step:05d}")

    def instability_on_disk(self) -> list[tuple[int, int, str]]:
        """(level, rewind_step, variant) of every instability folder, sorted."""
        if not os.path.isdir(self.instability_root):
            return []
        found = (_INSTABILITY_DIR.match(name) for name in os.listdir(self.instability_root))
        return sorted((int(m.group(1)), int(m.group(2)), m.group(3).lstrip("_")) for m in found if m)

    def rounds_on_disk(self) -> list[int]:
        """Round numbers that have a folder, sorted."""
        if not os.path.isdir(self.path):
            return []
        return sorted(int(m.group(1)) for m in map(_ROUND_DIR.match, os.listdir(self.path)) if m)

    # -- creating, locking, checking -------------------------------------------------------------
    def exists(self) -> bool:
        return os.path.isfile(self.config_file)

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
        """Take the run's exclusive lock, or refuse naming the process that holds it."""
        if self._lock_fd is not None:
            return
        path = self.file(".lock")
        refuse_link(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ValueError(f"output_dir {self.path!r} is not writable ({e.strerror})") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunLockedError(
                    f"output_dir {self.path!r} is being written by another process (pid {holder}); "
                    "wait for it to finish or stop it, then rerun to resume"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

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
        refuse_link(self.progress_dir)
        shutil.rmtree(self.progress_dir, ignore_errors=True)

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
