"""Crash-safe files: atomic writes, validated reads, and the temporary names this tool owns.

Every file is written to a temporary name carrying this tool's marker and the writer's pid,
fsynced, and renamed; directories are filled under such a name and renamed into place, so a
crash never leaves half a file. Only names with the marker are ever cleaned up. Symbolic links
are refused where tf_lottery writes or reads a run, so nothing is written or deleted elsewhere.
NumPy files are read with allow_pickle=False. No TensorFlow.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import shutil
import zipfile
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

# Temporary names this tool creates: ".<name>.tflottery-<pid>-<token>.tmp" (or ".old").
_MARKER = "tflottery"
_TEMPORARY = re.compile(r"^\..+\." + _MARKER + r"-\d+-[0-9a-f]{8}\.(tmp|old)$")


class CorruptRunError(ValueError):
    """A file of the run directory is truncated, corrupted, tampered with or from another run."""


def temporary_name(path: str, kind: str = "tmp") -> str:
    directory, base = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{base}.{_MARKER}-{os.getpid()}-{secrets.token_hex(4)}.{kind}")


def is_temporary(name: str) -> bool:
    """True for the names this tool gives its temporary files and directories (and only those)."""
    return bool(_TEMPORARY.match(name))


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def refuse_link(path: str) -> None:
    if os.path.islink(path):
        raise CorruptRunError(
            f"{path} is a symbolic link; tf_lottery refuses links inside a run directory (it would write "
            "outside the run): replace it with a real file or directory"
        )


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a mix."""
    refuse_link(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = temporary_name(path)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(directory)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None:
            raise OSError(e.errno, e.strerror, path) from e  # name the file, not its temporary
        raise


def atomic_write_json(path: str, value: Any) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=1) + "\n").encode())


def save_arrays(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    """An .npz of named arrays, written atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buffer.getvalue())


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
    """Fill a temporary directory and rename it to `path` only if the block succeeds."""
    refuse_link(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = temporary_name(path)
    os.mkdir(tmp)
    try:
        yield tmp
        for root, _, files in os.walk(tmp):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    os.fsync(f.fileno())
        if os.path.lexists(path):
            refuse_link(path)
            old = temporary_name(path, "old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_directory(path: str) -> None:
    """Delete a directory so that a kill at any moment leaves it either whole or gone.

    It is renamed to a temporary name first (one atomic step), then removed: a kill during the
    removal leaves only a temporary, which the next run deletes, never a half-emptied `path`.
    """
    refuse_link(path)
    if not os.path.lexists(path):
        return
    old = temporary_name(path, "old")
    os.replace(path, old)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))
    shutil.rmtree(old, ignore_errors=True)


# -- reading -------------------------------------------------------------------------------------
def corrupt(path: str, why: str, fix: str = "delete it to recompute") -> CorruptRunError:
    return CorruptRunError(f"{path} {why}; {fix}")


def load_json(path: str) -> Any:
    refuse_link(path)
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise corrupt(path, f"is truncated or corrupted ({type(e).__name__})") from e


def load_arrays(path: str) -> dict[str, np.ndarray]:
    """Read an .npz written by `save_arrays`; refuse pickles and report corruption in one line."""
    refuse_link(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise corrupt(path, f"is truncated or corrupted ({type(e).__name__})") from e


def make_directories(path: str) -> list[str]:
    """Create `path` and its missing parents; return those created, deepest last (OSError naming a file in the way)."""
    missing = []
    current = os.path.abspath(path)
    while not os.path.isdir(current):
        missing.append(current)
        current = os.path.dirname(current)
    created = []
    try:
        for directory in reversed(missing):
            os.mkdir(directory)
            created.append(directory)
    except OSError:
        remove_directories(created)
        raise
    return created


def remove_directories(created: Sequence[str]) -> None:
    """Remove directories `make_directories` created, deepest first, and only while they are empty."""
    for directory in reversed(created):
        with contextlib.suppress(OSError):
            os.rmdir(directory)


@contextlib.contextmanager
def made_directory(directory: str) -> Iterator[None]:
    """Create `directory` (and missing parents) for the block; remove those created if the block fails."""
    created = make_directories(directory)
    try:
        yield
    except BaseException:
        remove_directories(created)
        raise
