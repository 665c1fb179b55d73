"""One line on stderr for every error a user can cause or meet (bad input, damaged runs, full disks).

Anything else is a bug in tf_lottery and keeps its traceback.
"""

from __future__ import annotations

import errno
import sys
from typing import Optional

from tf_lottery.errors import UserError, first_line

# OSErrors of the environment, with what to do about each.
_OS_ADVICE = {
    errno.ENOSPC: "free some space",
    errno.EDQUOT: "free some space",
    errno.EROFS: "the file system is read-only; choose a writable directory",
    errno.EACCES: "check the permissions",
    errno.EPERM: "check the permissions",
    errno.EEXIST: "a file is in the way; move it",
    errno.ENOTDIR: "a file stands where a directory is needed; move it",
    errno.EISDIR: "a directory stands where a file is needed; move it",
    errno.ENOENT: "the path does not exist",
    errno.ENAMETOOLONG: "the path is too long",
}
_TF_ENVIRONMENT_ERRORS = ("ResourceExhaustedError", "PermissionDeniedError", "FailedPreconditionError",
                          "DataLossError", "NotFoundError", "AlreadyExistsError", "UnavailableError")


def message(error: BaseException, resume: Optional[str] = None) -> Optional[str]:
    """The one-line message for `error`, or None when it is a bug (keep the traceback)."""
    again = f"; then rerun the same command to resume {resume}" if resume else ""
    if isinstance(error, (ValueError, UserError)):
        return first_line(error)
    if isinstance(error, OSError) and error.errno in _OS_ADVICE:
        where = error.filename or ""
        return f"cannot write {where}: {error.strerror} ({_OS_ADVICE[error.errno]}){again}".replace("write : ", "write: ")
    if _is_tf_environment_error(error):
        text = getattr(error, "message", None) or str(error)
        return f"{first_line(text)} ({type(error).__name__}){again}"
    return None


def _is_tf_environment_error(error: BaseException) -> bool:
    """One of TensorFlow's errors about the environment (a full disk, a missing file, ...); TensorFlow is
    not imported for this: an error of its kind can only come from a process that loaded it."""
    if "tensorflow" not in sys.modules:
        return False
    import tensorflow as tf

    return isinstance(error, tuple(getattr(tf.errors, name) for name in _TF_ENVIRONMENT_ERRORS))


def report(program: str, error: BaseException, resume: Optional[str] = None) -> int:
    """Print `program: error: <one line>` and return 1; re-raise bugs."""
    line = message(error, resume)
    if line is None:
        raise error
    print(f"{program}: error: {line}", file=sys.stderr)
    return 1
