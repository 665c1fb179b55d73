"""One line on stderr for every error a user can cause or meet (bad input, damaged runs, full disks).

Anything else is a bug in tf_lottery and keeps its traceback.
"""

from __future__ import annotations

import errno
import sys
from typing import Optional

from tf_lottery.errors import first_line

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
    if isinstance(error, ValueError):
        return first_line(error)
    names = {cls.__name__ for cls in type(error).__mro__}
    if names & {"TrainingDiverged", "WorkerLostError"}:
        return first_line(error)
    if isinstance(error, OSError) and error.errno in _OS_ADVICE:
        where = error.filename or ""
        return f"cannot write {where}: {error.strerror} ({_OS_ADVICE[error.errno]}){again}".replace("write : ", "write: ")
    if names & set(_TF_ENVIRONMENT_ERRORS) and "tensorflow" in sys.modules:
        text = getattr(error, "message", None) or str(error)
        return f"{first_line(text)} ({type(error).__name__}){again}"
    return None


def report(program: str, error: BaseException, resume: Optional[str] = None) -> int:
    """Print `program: error: <one line>` and return 1; re-raise bugs."""
    line = message(error, resume)
    if line is None:
        raise error
    print(f"{program}: error: {line}", file=sys.stderr)
    return 1
