"""lottery-report: plots and a Markdown table of one or more ticket searches.

Reads only config.json, summary.json and the per-round JSON logs (each checked first), so a
finished run copied from another machine (or its `--data_out` copy) is enough. Several --run_dir
flags, or a parent folder of replicates, are averaged with min-max error bars; with --compare,
runs that differ in more than the seed are drawn as separate series instead (compare.png).
Anything wrong (a damaged or foreign run, an unwritable --out) is one line on stderr, exit 1,
and nothing written.
"""

from __future__ import annotations

import shlex
import sys

from absl import app, flags

from tf_lottery import branches

FLAGS = flags.FLAGS

flags.DEFINE_multi_string("run_dir", [], "A lottery-find output_dir, or a folder of replicates (repeatable).")
flags.DEFINE_string("out", "report", "Folder for report.md, curves.json and the PNG plots.")
flags.DEFINE_list(
    "levels", ["100", "51.3", "21.1", "7.0", "3.6", "1.9"],
    "Percent of weights remaining whose training curves to draw (the nearest round each; paper's Figure 3).",
)
flags.DEFINE_string(
    "data_out", None,
    "Also copy each run's small files here, to share or check in: config.json, summary.json, rounds.csv "
    "and round_RR/<branch>.json (no checkpoints or masks); --run_dir=<this folder> redraws the report.",
)
flags.DEFINE_bool(
    "compare", False,
    "Draw runs that differ in more than the seed as separate series, labelled by the config fields where "
    "they differ (e.g. retrain=lr_rewind), in compare.png and a comparison table; replicates still average.",
)
flags.DEFINE_string(
    "serving", None,
    "Draw the serving frontier instead: the JSON of benchmarks/serving_latency.py, as accuracy against measured "
    "batch-256 latency and size per granularity and export kind (frontier.png, report.md in --out).",
)
flags.DEFINE_list(
    "branches", ["main"],
    f"With --compare: the branches drawn for each search ({', '.join(branches.names())}).",
)


def _levels(values) -> list[float]:
    try:
        levels = [float(v) for v in values]
    except ValueError:
        raise ValueError(f"--levels={','.join(values)} must be numbers (percent of weights remaining)") from None
    bad = [v for v in levels if not 0 < v <= 100]
    if bad:
        raise ValueError(f"--levels value {bad[0]} is outside the allowed range (0, 100]")
    return levels


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    # The report's modules (matplotlib) load only once the flags parse: --help stays instant.
    from tf_lottery.report import writer as report  # imports no TensorFlow
    from tf_lottery.cli import errors

    try:
        if FLAGS.serving is not None:
            return _serving(errors)
        if not FLAGS.run_dir:
            raise ValueError("no --run_dir given; pass a lottery-find output_dir (repeat the flag for several)")
        if FLAGS["branches"].present and not FLAGS.compare:
            raise ValueError("--branches chooses the series of --compare; add --compare, or drop --branches")
        command = "lottery-report " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        result = report.write_report(FLAGS.run_dir, FLAGS.out, _levels(FLAGS.levels), command=command,
                                     compare=FLAGS.compare, branches=FLAGS.branches, data_out=FLAGS.data_out)
    except (ValueError, OSError) as e:
        return errors.report("lottery-report", e)
    for note in result.notes:
        print(f"missing: {note}")
    print(f"report of {len(result.runs)} run(s): {', '.join(result.files)}")
    if result.copied:
        print(f"copied {len(result.copied)} data files to {FLAGS.data_out}")
    return 0


def _serving(errors) -> int:
    """lottery-report --serving=FILE: the frontier of one benchmark record."""
    from tf_lottery.report import serving as report_serving  # matplotlib, only for --serving

    try:
        if FLAGS.run_dir or FLAGS.compare:
            raise ValueError("--serving draws the benchmark's record alone; drop --run_dir and --compare")
        command = "lottery-report " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        written = report_serving.write(FLAGS.serving, FLAGS.out, command=command)
    except (ValueError, OSError) as e:
        return errors.report("lottery-report", e)
    print(f"serving frontier: {', '.join(written)}")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
