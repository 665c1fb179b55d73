"""Where a version goes: <export_base>[/<model_name>]/<version>/, as TF Serving reads it.

Everything here is checked before anything is written. A version is filled under a temporary
name carrying this tool's marker (`files.temporary_name`) and renamed into place; what an export
killed mid-way leaves (its marked temporaries) is removed by the next export into the same model
directory, and directories an export created are removed again if it fails.
"""

from __future__ import annotations

import contextlib
import numbers
import os
import re
import shutil
from typing import Optional, Sequence

from tf_lottery import files

MAX_VERSION = 2**63 - 1  # TF Serving parses version directory names as int64
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_VERSION_NAME = re.compile(r"^[0-9]+$")
# A temporary version directory ".<version>.tflottery-<pid>-<token>.tmp|old" (files.temporary_name).
_VERSION_TEMPORARY = re.compile(r"^\.[0-9]+\.tflottery-(\d+)-[0-9a-f]{8}\.(tmp|old)$")


def model_directory(export_base: str, model_name: Optional[str] = None) -> str:
    """export_base, or export_base/model_name after checking that the name cannot leave export_base."""
    base = os.path.abspath(export_base)
    _check_directory(base, "export_base", export_base)
    if model_name is None or model_name == "":
        return base
    if not _MODEL_NAME.match(model_name) or model_name in (".", ".."):
        raise ValueError(
            f"model_name {model_name!r} is not allowed; use letters, digits, '.', '_' and '-' "
            "(no '/' or '..': the export must stay inside export_base)"
        )
    path = os.path.join(base, model_name)
    real_base = os.path.realpath(base)
    if os.path.commonpath([os.path.realpath(path), real_base]) != real_base:
        raise ValueError(f"model_name {model_name!r} resolves outside export_base {export_base!r} (a symlink)")
    _check_directory(path, "model_name", model_name)
    return path


def _check_directory(path: str, setting: str, value: str) -> None:
    """`path` is a directory, or can be created as one: no file stands on it or on a parent."""
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "exists and is not a directory" if existing == path else f"cannot be created: {existing} is a file"
        raise ValueError(f"{setting} {value!r} {where}; allowed: a directory, or a path where one can be made")


def check_writable(directory: str) -> None:
    """Refuse a model directory (or the existing directory it would be made in) that cannot be written."""
    existing = directory
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.access(existing, os.W_OK | os.X_OK):
        why = "a read-only file system" if _read_only_mount(existing) else "no write permission"
        raise ValueError(f"cannot export into {directory}: {existing} is not writable ({why}); choose a writable export_base")


def _read_only_mount(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def versions(directory: str) -> list[int]:
    """The integer version directories TF Serving would see in `directory`."""
    if not os.path.isdir(directory):
        return []
    return sorted(
        int(n) for n in os.listdir(directory)
        if _VERSION_NAME.match(n) and int(n) <= MAX_VERSION and os.path.isdir(os.path.join(directory, n))
    )


def whole_number(value) -> bool:
    """An int (not a bool), or a float with an integer value."""
    if isinstance(value, float):
        return value.is_integer()
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_version(version) -> Optional[int]:
    """None (the next free version) or an integer version TF Serving can load."""
    if version is None:
        return None
    if not whole_number(version):
        raise ValueError(f"version={version!r} must be an integer in 1..{MAX_VERSION} (TF Serving's int64 versions)")
    if not 1 <= int(version) <= MAX_VERSION:
        raise ValueError(f"version={int(version)} must be an integer in 1..{MAX_VERSION} (TF Serving's int64 versions)")
    return int(version)


def version_path(directory: str, version: Optional[int], overwrite: bool) -> tuple[int, str]:
    """The version to write (given, or one more than the highest) and its directory, checked to be free."""
    version = check_version(version)
    if version is None:
        existing = versions(directory)
        version = check_version(existing[-1] + 1 if existing else 1)
    path = os.path.join(directory, str(version))
    if os.path.islink(path):
        raise ValueError(f"version directory {path} is a symbolic link; tf_lottery replaces only real directories: "
                         "remove the link or choose another version")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ValueError(f"version path {path} is a file, not a version directory; move it or choose another version")
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"version directory {path} already exists; pass overwrite (--overwrite) to replace it or choose another version")
    return version, path


def remove_stale_temporaries(directory: str) -> list[str]:
    """Delete the temporary version directories that killed exports left in `directory`.

    Only names this tool gives them (`.<version>.tflottery-<pid>-<token>.tmp|old`) whose writer
    is no longer running; symbolic links are left alone and never followed.
    """
    removed = []
    if not os.path.isdir(directory):
        return removed
    for name in sorted(os.listdir(directory)):
        match = _VERSION_TEMPORARY.match(name)
        full = os.path.join(directory, name)
        if not match or not files.is_temporary(name) or os.path.islink(full) or _running(int(match.group(1))):
            continue
        if os.path.isdir(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(full)
        if not os.path.lexists(full):
            removed.append(full)
    return removed


def _running(pid: int) -> bool:
    """True while process `pid` (possibly another export into the same directory) is alive."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # alive, owned by another user
    return True


def make_readable(path: str) -> None:
    """Temporary files and directories are private (0600/0700); a model server may run as another user."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o755 & ~umask)
    for root, dirs, names in os.walk(path):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755 & ~umask)
        for name in names:
            os.chmod(os.path.join(root, name), 0o644 & ~umask)


def directory_bytes(path: str, exclude: Sequence[str] = ()) -> int:
    """Total size of the files under `path`, leaving out top-level names in `exclude`."""
    total = 0
    for root, _, names in os.walk(path):
        for name in names:
            if root == path and name in exclude:
                continue
            total += os.path.getsize(os.path.join(root, name))
    return total
