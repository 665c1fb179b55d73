"""lottery-instability: the instability analysis (linear mode connectivity) of a lottery-find run.

For each --levels round (0: the dense network) and each --rewind_steps k, two copies of the
round's ticket start from the dense run's weights at iteration k, train to the end on different
data orders, and the test error is measured at --points alphas on the line between them; one
line per (level, k) gives the instability (the error barrier). Results land in the run's
instability/ folder, a rerun resumes, and lottery-report draws them. Errors are one line.

    lottery-instability --run_dir=runs/lenet --levels=0,3,6 --rewind_steps=0,25,100,500
    lottery-instability --run_dir=runs/lenet --levels=0,15 --rewind_steps=0,100,500 --mask_per_k \
      --controls=random_prune,random_reinit      # the paper's protocol and its random contrast
"""

from __future__ import annotations

import dataclasses
import sys

from absl import app, flags

from tf_lottery import config as config_lib
from tf_lottery.cli import common, errors

FLAGS = flags.FLAGS


def _help(section, name: str) -> str:
    """A config field's own help, so the flag and the field say the same (one name per setting)."""
    field = next(f for f in dataclasses.fields(section) if f.name == name)
    return f"{field.metadata['help']} [default {field.default!r}]"


flags.DEFINE_string("run_dir", None, "A lottery-find output_dir with the levels asked for finished.")
flags.DEFINE_list("levels", ["0"], "Rounds whose ticket is analyzed (their masks.npz); 0 is the dense network.")
flags.DEFINE_list("rewind_steps", ["0"], "Iterations k of round 0's training the two copies start from (0 <= k < T).")
flags.DEFINE_bool("mask_per_k", False, "At each k, use the mask of an IMP search rewound to k (the paper's protocol; "
                  "found once in RUN/instability/imp_k_KKKKK, sharing the run's dense training); default: the run's masks.")
flags.DEFINE_list("controls", [], "Controls analyzed beside each level > 0: random_prune (a random mask with the "
                  "same per-layer counts, from theta_k), random_reinit (the same mask, kernels drawn afresh).")
flags.DEFINE_integer("points", 30, "Points on the path between the copies, both ends included (the paper: 30).")
flags.DEFINE_string("data_dir", None, _help(config_lib.DataConfig, "data_dir") + " Default: the run's own.")
flags.DEFINE_string("strategy", None, _help(config_lib.RuntimeConfig, "strategy"))
flags.DEFINE_string("tpu", None, _help(config_lib.RuntimeConfig, "tpu"))
flags.DEFINE_float("worker_timeout", None, _help(config_lib.RuntimeConfig, "worker_timeout"))
flags.DEFINE_bool("quiet", False, "Print only errors and the result lines (no progress bar, no notes on the way).")
flags.DEFINE_bool("verbose", False, "Also print one line per evaluation, TensorFlow's own log and its start-up lines.")


def runtime_from_flags() -> config_lib.RuntimeConfig:
    """The strategy to run under, checked as lottery-find checks its flags of the same names."""
    given = {name: FLAGS[name].value for name in ("strategy", "tpu", "worker_timeout") if FLAGS[name].value is not None}
    return config_lib.RuntimeConfig(**given)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        say = common.start("lottery-instability", FLAGS.quiet, FLAGS.verbose)
        if not FLAGS.run_dir:
            raise ValueError("no --run_dir given; pass a lottery-find output_dir (--run_dir=runs/NAME)")
        runtime = runtime_from_flags()
        # TensorFlow loads here, after the flags and the runtime settings are checked.
        from tf_lottery.search import distribute
        from tf_lottery.analysis import instability as stability
        from tf_lottery.search.progress import Progress

        strategy = distribute.get_strategy(runtime)
        mode = "quiet" if FLAGS.quiet else "verbose" if FLAGS.verbose else "normal"
        rows = stability.analyze(FLAGS.run_dir, FLAGS.levels, FLAGS.rewind_steps, FLAGS.points, strategy,
                                 FLAGS.data_dir, log=say, progress=Progress(mode), mask_per_k=FLAGS.mask_per_k,
                                 controls=FLAGS.controls)
    except KeyboardInterrupt as e:
        print(f"lottery-instability: interrupted; rerun the same command to resume {FLAGS.run_dir}", file=sys.stderr)
        return common.interrupted_status(e)
    except Exception as e:  # noqa: BLE001  (user errors and environment failures: one line each)
        return errors.report("lottery-instability", e, resume=FLAGS.run_dir)
    if FLAGS.quiet:
        for row in rows:
            print(stability.format_row(row))
    print(f"done: {len(rows)} instability result(s) in {FLAGS.run_dir}/instability; "
          f"lottery-report --run_dir={FLAGS.run_dir} draws them")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
