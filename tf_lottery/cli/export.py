"""lottery-export: export a round of a ticket search as a TF Serving version, or verify an export.

  lottery-export --run_dir=runs/lenet --round=best --export_base=serving/lenet --format=sparse --warmup=10
  lottery-export --verify=serving/lenet/1

Errors in the input or the environment (a damaged run, a full or read-only disk) are reported in
one line on stderr with exit code 1; an interrupted export publishes nothing.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

import tf_lottery  # noqa: F401  (quiets TensorFlow's C++ logs before TensorFlow loads)
from tf_lottery.cli import common, errors

FLAGS = flags.FLAGS

flags.DEFINE_string("run_dir", None, "Run directory written by lottery-find.")
flags.DEFINE_string("round", "best", "best (highest early-stop test accuracy, ties: sparser), last, or a round number.")
flags.DEFINE_string("export_base", None, "Base directory; the version goes to <export_base>[/<model_name>]/<version>/.")
flags.DEFINE_string("model_name", None, "Optional subdirectory of export_base named after the served model.")
flags.DEFINE_integer("version", None, "Version directory number (default: one more than the highest existing).")
flags.DEFINE_enum("format", "dense", ["dense", "sparse", "compact"],
                  "dense kernels; pruned kernels as surviving values + positions; or compact: the network rebuilt "
                  "without the units and filters that carry no signal (stock dense layers, smaller).")
flags.DEFINE_integer("warmup", 0, "Write this many TF Serving warmup requests (assets.extra/tf_serving_warmup_requests).")
flags.DEFINE_bool("tflite", False, "Also write model.tflite with TFLite's sparsity optimization.")
flags.DEFINE_bool("overwrite", False, "Replace an existing version directory.")
flags.DEFINE_string("verify", None, "Only verify this export directory: signature, sparsity, size, output agreement.")
flags.DEFINE_bool("verbose", False, "Also show TensorFlow's start-up log lines on stderr.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    common.raise_on_sigterm()
    common.quiet_tensorflow(FLAGS.verbose)
    from tf_lottery import export  # TensorFlow: after the flags parse and the logs are quieted

    logging.set_verbosity(logging.WARNING)
    try:
        if FLAGS.verify:
            check = export.verify(FLAGS.verify, run_dir=FLAGS.run_dir)
            print(check.report())
            return 0 if check.ok else 1
        if not FLAGS.run_dir or not FLAGS.export_base:
            raise ValueError("give --run_dir and --export_base (or --verify=EXPORT_DIR)")
        result = export.export_ticket(
            FLAGS.run_dir,
            FLAGS.export_base,
            round=FLAGS.round,
            format=FLAGS.format,
            model_name=FLAGS.model_name,
            version=FLAGS.version,
            warmup=FLAGS.warmup,
            tflite=FLAGS.tflite,
            overwrite=FLAGS.overwrite,
        )
    except KeyboardInterrupt as e:
        print("lottery-export: interrupted; an unfinished version is never published", file=sys.stderr)
        return common.interrupted_status(e)
    except Exception as e:  # noqa: BLE001  (user errors and environment failures: one line each; bugs re-raised)
        return errors.report("lottery-export", e)
    print(result.verification.report())
    print(f"exported version {result.version} to {result.path}")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
