"""What the three CLIs share: a quiet TensorFlow start-up and SIGTERM handled like Ctrl-C.

A user error costs one line on stderr. TensorFlow's C++ start-up writes about five lines there first
("All log messages before absl::InitializeLog() ...", "cudart_stub.cc ... Could not find cuda
drivers", "cuda_platform.cc ... failed call to cuInit"), whatever TF_CPP_MIN_LOG_LEVEL says, because
absl logs them before it reads any setting. `quiet_tensorflow` imports TensorFlow and initializes
its devices with file descriptor 2 pointed at /dev/null, then restores it: our error lines, later
TensorFlow errors and Python tracebacks still show. No setting that changes numerics is touched
(TF_ENABLE_ONEDNN_OPTS=0 would).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Iterator

# What a process stopped by a signal conventionally exits with: 128 + the signal number.
INTERRUPTED_STATUS = 128 + signal.SIGINT  # 130
TERMINATED_STATUS = 128 + signal.SIGTERM  # 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program happens to be, as Python raises KeyboardInterrupt for SIGINT."""


@contextlib.contextmanager
def native_stderr_silenced(silence: bool = True) -> Iterator[None]:
    """Point file descriptor 2 at /dev/null inside the block (C++ logging writes there directly)."""
    if not silence:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()  # what Python wrote inside the block goes where the C++ lines went
        os.dup2(saved, 2)
        os.close(saved)


def quiet_tensorflow(verbose: bool = False) -> None:
    """Import TensorFlow and initialize its devices without their start-up lines, unless `verbose`.

    Call it at the top of a CLI's main, before importing the library. Listing the physical devices
    initializes the platforms (the cuInit line) without starting TensorFlow's runtime, so logical
    devices, multi-worker and TPU strategies can still be configured afterwards.
    """
    import tf_lottery  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow loads)

    with native_stderr_silenced(not verbose):
        import tensorflow as tf

        tf.config.list_physical_devices()


def raise_on_sigterm() -> None:
    """From now on the first SIGTERM raises `Terminated`, so a CLI's `except KeyboardInterrupt`
    prints its one line for it too; a second SIGTERM ends the process at once, as by default."""

    def terminated(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated(f"received signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, terminated)


def interrupted_status(error: KeyboardInterrupt) -> int:
    """The exit status after an interruption: 143 for SIGTERM, 130 for Ctrl-C (SIGINT)."""
    return TERMINATED_STATUS if isinstance(error, Terminated) else INTERRUPTED_STATUS


def start(program: str, quiet: bool, verbose: bool):
    """The prologue of a long-running CLI: SIGTERM as Ctrl-C, TensorFlow quiet unless `verbose`,
    --quiet and --verbose exclusive. Returns the function that prints a line (nothing when quiet)."""
    from absl import logging

    raise_on_sigterm()
    quiet_tensorflow(verbose)  # before anything imports TensorFlow
    if quiet and verbose:
        raise ValueError("--quiet and --verbose exclude each other; give at most one")
    if not verbose and not _verbosity_given():
        logging.set_verbosity(logging.WARNING)  # TF's per-checkpoint INFO lines would drown the output
    return (lambda line: None) if quiet else (lambda line: print(line, flush=True))


def _verbosity_given() -> bool:
    from absl import flags

    return "verbosity" in flags.FLAGS and flags.FLAGS["verbosity"].present
