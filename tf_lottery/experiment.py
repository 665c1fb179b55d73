"""The run directory: everything a ticket search writes, written so that a crash never corrupts it.

Layout (RR is the two-digit round):
  config.json                the ExperimentConfig and its fingerprint (written first, checked on resume)
  initial.npz                theta_0, every parameter before training
  rewind.npz                 the rewind point when rewind_step > 0 (otherwise theta_0 = initial.npz)
  dense_kernels.npz          the dense run's trained kernels (one-shot pruning reads them)
  round_RR/masks.npz         the mask trained in round RR
  round_RR/checkpoint/       TF checkpoint of the trained weights and masks of round RR
  round_RR/next_masks.npz    the mask that round RR+1 trains
  round_RR/main.json         metrics and evaluation history of the ticket at round RR
  round_RR/<control>.json    the same for each control (random_reinit, random_prune)
  in_progress/               a mid-training checkpoint of the stage now running, for resuming
  summary.json, rounds.csv   every finished round, rebuilt after each stage
  tensorboard/               scalars per stage

Every file is written to a temporary name, fsynced and renamed; directories are filled under a
temporary name and renamed. NumPy files are read with allow_pickle=False.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import tempfile
import zipfile
from typing import Any, Iterator, Optional

import numpy as np
import tensorflow as tf

from tf_lottery.config import ExperimentConfig, differing_fields

CONTROL_NAMES = ("random_reinit", "random_prune")
CSV_COLUMNS = [
    "round",
    "weights_remaining",
    "test_accuracy",
    "early_stop_iteration",
    "early_stop_test_accuracy",
    "seconds",
]


def ticket_checkpoint(model) -> tf.train.Checkpoint:
    """A checkpoint of the model's layers (weights and masks) without its optimizer.

    Rooted at the layers rather than the model so that a compiled model's optimizer state is
    neither saved nor restored later by TensorFlow's deferred restoration into a fresh optimizer.
    """
    return tf.train.Checkpoint(layers=list(model.layers))


class CorruptRunError(ValueError):
    """A file of the run directory is truncated, corrupted or from another model."""


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a mix."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(directory)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=1, sort_keys=False) + "\n").encode())


def save_arrays(path: str, arrays: dict[str, np.ndarray]) -> None:
    """An .npz of named arrays, written atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buffer.getvalue())


def load_arrays(path: str) -> dict[str, np.ndarray]:
    """Read an .npz written by `save_arrays`; refuse pickles and report corruption in one line."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise CorruptRunError(f"{path} is truncated or corrupted ({type(e).__name__}); delete it to recompute") from e


def save_weight_list(path: str, values: list[np.ndarray]) -> None:
    save_arrays(path, {f"w{i:04d}": v for i, v in enumerate(values)})


def load_weight_list(path: str) -> list[np.ndarray]:
    arrays = load_arrays(path)
    return [arrays[k] for k in sorted(arrays)]


def load_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CorruptRunError(f"{path} is truncated or corrupted ({type(e).__name__}); delete it to recompute") from e


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
    """Fill a temporary directory and rename it to `path` only if the block succeeds."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        yield tmp
        for root, _, files in os.walk(tmp):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    os.fsync(f.fileno())
        if os.path.exists(path):
            old = path + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class RunDirectory:
    """Reads and writes one run directory. With `writable=False` (a non-chief worker) writes go nowhere."""

    def __init__(self, path: str, writable: bool = True):
        self.path = os.path.abspath(path)
        self.writable = writable

    # -- paths ------------------------------------------------------------------------------
    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def round_dir(self, round_index: int) -> str:
        return self.file(f"round_{round_index:02d}")

    def round_file(self, round_index: int, name: str) -> str:
        return os.path.join(self.round_dir(round_index), name)

    # -- configuration ----------------------------------------------------------------------
    def prepare(self, config: ExperimentConfig) -> bool:
        """Create the directory, or check that an existing one was made by the same config.

        Returns True when resuming an existing run.
        """
        config_path = self.file("config.json")
        if os.path.exists(config_path):
            saved = load_json(config_path)
            try:
                previous = ExperimentConfig.from_dict(saved["config"])
            except (KeyError, TypeError, ValueError) as e:
                raise CorruptRunError(f"{config_path} is not a tf_lottery config ({e})") from e
            diff = differing_fields(previous, config)
            if diff:
                raise ValueError(
                    f"output directory {self.path} holds a run with different hyperparameters "
                    f"({', '.join(diff)}); use another --output_dir or the same flags to resume"
                )
            if self.writable:
                self._remove_stale_temporaries()
            return True
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ValueError(f"output_dir {self.path!r} exists and is not a directory")
        if os.path.isdir(self.path) and os.listdir(self.path) and self.writable:
            raise ValueError(
                f"output_dir {self.path!r} is not empty and holds no tf_lottery run (no config.json); "
                "allowed: a new or empty directory, or an existing run to resume"
            )
        if not self.writable:
            return False
        try:
            os.makedirs(self.path, exist_ok=True)
            atomic_write_json(config_path, {"config": config.to_dict(), "fingerprint": config.fingerprint()})
        except OSError as e:
            raise ValueError(f"output_dir {self.path!r} is not writable ({e.strerror})") from e
        return False

    def _remove_stale_temporaries(self) -> None:
        """Drop what a killed process left half-written: temporary files and directories, never results."""
        for root, dirs, files in os.walk(self.path):
            for name in list(dirs):
                if (name.startswith(".") and name.endswith(".tmp")) or name.endswith(".old"):
                    shutil.rmtree(os.path.join(root, name), ignore_errors=True)
                    dirs.remove(name)
            for name in files:
                if name.startswith(".") and name.endswith(".tmp"):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(root, name))

    # -- arrays -----------------------------------------------------------------------------
    def save_weights(self, name: str, values: list[np.ndarray]) -> None:
        if self.writable:
            save_weight_list(self.file(name), values)

    def load_weights(self, name: str) -> Optional[list[np.ndarray]]:
        path = self.file(name)
        return load_weight_list(path) if os.path.exists(path) else None

    def save_masks(self, round_index: int, name: str, masks: dict[str, np.ndarray]) -> None:
        if self.writable:
            save_arrays(self.round_file(round_index, name), masks)

    def load_masks(self, round_index: int, name: str) -> Optional[dict[str, np.ndarray]]:
        path = self.round_file(round_index, name)
        return load_arrays(path) if os.path.exists(path) else None

    def save_dense_kernels(self, kernels: dict[str, np.ndarray]) -> None:
        if self.writable:
            save_arrays(self.file("dense_kernels.npz"), kernels)

    def load_dense_kernels(self) -> Optional[dict[str, np.ndarray]]:
        path = self.file("dense_kernels.npz")
        return load_arrays(path) if os.path.exists(path) else None

    # -- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self, round_index: int, model) -> None:
        """The trained weights and masks of a round, as a TF checkpoint (model variables only)."""
        if not self.writable:
            return
        with atomic_directory(self.round_file(round_index, "checkpoint")) as tmp:
            ticket_checkpoint(model).write(os.path.join(tmp, "ticket"))

    def restore_checkpoint(self, round_index: int, model) -> None:
        """Load a round's trained weights and masks into a wrapped model of the same architecture."""
        prefix = self.checkpoint_prefix(round_index)
        try:
            ticket_checkpoint(model).read(prefix).assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError) as e:
            raise CorruptRunError(
                f"{prefix} is missing, corrupted or from another model ({type(e).__name__})"
            ) from e

    def checkpoint_prefix(self, round_index: int) -> str:
        return os.path.join(self.round_file(round_index, "checkpoint"), "ticket")

    # -- stage results ----------------------------------------------------------------------
    def save_stage(self, round_index: int, stage: str, result: dict) -> None:
        if self.writable:
            atomic_write_json(self.round_file(round_index, f"{stage}.json"), result)

    def load_stage(self, round_index: int, stage: str) -> Optional[dict]:
        path = self.round_file(round_index, f"{stage}.json")
        return load_json(path) if os.path.exists(path) else None

    # -- in-progress training ---------------------------------------------------------------
    def save_progress(self, state: dict, checkpoint: tf.train.Checkpoint) -> None:
        """A mid-training checkpoint (model, optimizer) and the history so far."""
        if not self.writable:
            return
        with atomic_directory(self.file("in_progress")) as tmp:
            checkpoint.write(os.path.join(tmp, "state"))
            atomic_write_json(os.path.join(tmp, "state.json"), state)

    def load_progress(self) -> Optional[dict]:
        path = self.file("in_progress", "state.json")
        return load_json(path) if os.path.exists(path) else None

    def progress_prefix(self) -> str:
        return self.file("in_progress", "state")

    def clear_progress(self) -> None:
        if self.writable:
            shutil.rmtree(self.file("in_progress"), ignore_errors=True)

    # -- summaries --------------------------------------------------------------------------
    def write_summary(self, config: ExperimentConfig, rounds: list[dict]) -> None:
        if not self.writable:
            return
        atomic_write_json(
            self.file("summary.json"),
            {"config": config.to_dict(), "fingerprint": config.fingerprint(), "rounds": rounds},
        )
        controls = sorted({c for r in rounds for c in r.get("controls", {})})
        columns = CSV_COLUMNS + [f"{c}_{m}" for c in controls for m in ("test_accuracy", "early_stop_iteration", "early_stop_test_accuracy")]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        for r in rounds:
            row = {k: r.get(k) for k in CSV_COLUMNS}
            for c, metrics in r.get("controls", {}).items():
                for m in ("test_accuracy", "early_stop_iteration", "early_stop_test_accuracy"):
                    row[f"{c}_{m}"] = metrics.get(m)
            writer.writerow(row)
        atomic_write_bytes(self.file("rounds.csv"), out.getvalue().encode())

    def read_summary(self) -> dict:
        path = self.file("summary.json")
        if not os.path.exists(path):
            raise ValueError(f"{self.path!r} is not a tf_lottery run directory (no summary.json)")
        return load_json(path)
