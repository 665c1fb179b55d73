"""Run lottery-find's main in this process (no new Python and TensorFlow start-up per call): exit code,
stdout and stderr as the command line would give them. Tests that need a real process (start-up log
lines, signals, kill -9) start one instead."""

import contextlib
import io
import signal

from absl import flags
from tensorflow.python.framework import config as tf_config

from tf_lottery.cli import find

FLAGS = flags.FLAGS


def run_find(*argv: str):
    """(exit code, stdout, stderr) of `lottery-find *argv`."""
    FLAGS.unparse_flags()
    FLAGS(["lottery-find", *map(str, argv)])
    out, err = io.StringIO(), io.StringIO()
    previous = signal.getsignal(signal.SIGTERM)
    deterministic = tf_config.is_op_determinism_enabled()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = find.main(["lottery-find"])
    finally:
        signal.signal(signal.SIGTERM, previous)
        if not deterministic:  # --deterministic turns it on for the whole process
            tf_config.disable_op_determinism()
        FLAGS.unparse_flags()
    return code, out.getvalue(), err.getvalue()
