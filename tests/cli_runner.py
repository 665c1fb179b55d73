"""Run lottery-find's main in this process (no new Python and TensorFlow start-up per call): exit code,
stdout and stderr as the command line would give them. Tests that need a real process (start-up log
lines, signals, kill -9) start one instead."""

import contextlib
import importlib
import io
import signal
import sys

from absl import flags
from tensorflow.python.framework import config as tf_config

FLAGS = flags.FLAGS
_CLI = "tf_lottery.cli."


def load_cli(name: str):
    """The module of program tf_lottery.cli.<name>, with absl's FLAGS holding its flags and no other
    program's. Each program defines its flags on import, as absl programs do, and two of them share
    names with other types (--run_dir is a string for lottery-export, repeatable for lottery-report):
    one process runs one program, so a test that runs another first drops the flags of the last."""
    module = _CLI + name
    if module in sys.modules and FLAGS.flags_by_module_dict().get(module):
        return sys.modules[module]
    FLAGS.unparse_flags()
    for owner, owned in list(FLAGS.flags_by_module_dict().items()):
        if owner.startswith(_CLI):
            for flag in list(owned):
                if flag.name in FLAGS:
                    delattr(FLAGS, flag.name)
            if owner != _CLI + "flags":
                sys.modules.pop(owner, None)
    sys.modules.pop(module, None)
    return importlib.import_module(module)


def run_main(name: str, *argv: str) -> int:
    """The exit status of program tf_lottery.cli.<name> (`lottery-<name>`) run on `argv` in this process.
    Whatever the run leaves behind is undone: its flags, its SIGTERM handler, and op determinism
    (--deterministic turns it on for the whole process)."""
    module = load_cli(name)
    program = f"lottery-{name}"
    FLAGS.unparse_flags()
    previous = signal.getsignal(signal.SIGTERM)  # main() installs its own
    deterministic = tf_config.is_op_determinism_enabled()
    try:
        FLAGS([program, *map(str, argv)])
        return module.main([program])
    finally:
        signal.signal(signal.SIGTERM, previous)
        if not deterministic:
            tf_config.disable_op_determinism()
        FLAGS.unparse_flags()


def run_find(*argv: str):
    """(exit code, stdout, stderr) of `lottery-find *argv`."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_main("find", *argv)
    return code, out.getvalue(), err.getvalue()
