"""lottery-find: search for a winning ticket from the shell.

Every config field is a flag of the same name (`--fc_rate`, `--learning_rate`, ...; see
`tf_lottery.config`). Flags left unset take the chosen model's preset (the paper's
hyperparameters); flags given override it. Errors in the input are one line on stderr and a
non-zero exit code, before anything is written.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from absl import app, flags

from tf_lottery.cli import common, errors
from tf_lottery.cli import flags as config_flags

FLAGS = flags.FLAGS

CONFIG_FLAGS = config_flags.define_config_flags()
flags.DEFINE_string("output_dir", "runs/ticket", "Run directory; rerunning the same command resumes it.")
flags.DEFINE_string("preset", "paper", "Values for unset flags: 'paper' (the paper's) or 'fast' (4 epochs a round).")
flags.DEFINE_integer("replicates", 1, "Independent searches with seeds seed..seed+N-1, each in output_dir/seed_<s>/ (N > 1).")
flags.DEFINE_bool("quiet", False, "Print only errors and the final line (no progress bar, no per-round lines).")
flags.DEFINE_bool("verbose", False, "Also print one line per evaluation, TensorFlow's own log and its start-up lines.")


def config_from_flags():
    """The ExperimentConfig: the model's preset, overridden by every flag the user gave."""
    import tf_lottery_models as zoo  # TensorFlow: after the flags parse, so --help and bad flags stay fast

    model = FLAGS.model or "lenet_300_100"
    zoo.get_builder(model)  # unknown model: one line listing the known ones
    return config_flags.config_from_flags(CONFIG_FLAGS, model, FLAGS.preset, FLAGS.dataset or "fashion_mnist")


MAX_REPLICATES = 1000  # seeds of one command; a sweep beyond that is a job scheduler's work


def replicate_runs(config, output_dir: str, replicates: int):
    """(config, run directory) per replicate: one run as given, or seeds seed.. in output_dir/seed_<s>/."""
    if not 1 <= replicates <= MAX_REPLICATES:
        raise ValueError(f"replicates={replicates} must be an integer in 1..{MAX_REPLICATES}")
    if replicates == 1:
        return [(config, output_dir)]
    out = []
    for seed in range(config.runtime.seed, config.runtime.seed + replicates):
        runtime = dataclasses.replace(config.runtime, seed=seed)
        out.append((dataclasses.replace(config, runtime=runtime), os.path.join(output_dir, f"seed_{seed}")))
    return out


class _Header:
    """The run's header line, printed just before its first other output: a search refused while it is
    set up prints only its error line, not a header as if it had started. The search's data line is
    folded into it, so that the run's first line says where its data came from."""

    def __init__(self, say, line: str, data_prefix: str = ""):
        self.say, self.line, self.data_prefix = say, line, data_prefix

    def flush(self) -> None:
        if self.line is not None:
            self.say(self.line.replace(" ({data})", ""))
            self.line = None

    def then(self, line: str) -> None:
        if self.line is not None and self.data_prefix and line.startswith(self.data_prefix):
            self.line = self.line.replace("{data}", line[len(self.data_prefix):])
            return
        self.flush()
        self.say(line)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        say = common.start("lottery-find", FLAGS.quiet, FLAGS.verbose)
        if not FLAGS.output_dir:
            raise ValueError("output_dir='' is empty; give a directory for the run (--output_dir=runs/NAME)")
        config = config_from_flags()
        runs = replicate_runs(config, FLAGS.output_dir, FLAGS.replicates)
        # TensorFlow loads here, after the flags and the config are checked (a bad value costs no start-up).
        from tf_lottery.search import distribute, find as lottery
        from tf_lottery.search.progress import Progress

        strategy = distribute.get_strategy(config.runtime)
        tickets = []
        for run_config, output_dir in runs:
            header = _Header(say, (
                f"tf_lottery: {config.model.model} on {config.data.dataset} ({{data}}), {config.pruning.rounds} rounds, "
                f"seed {run_config.runtime.seed} -> {output_dir}"
            ), lottery.DATA_LINE_PREFIX)
            mode = "quiet" if FLAGS.quiet else "verbose" if FLAGS.verbose else "normal"
            tickets.append(lottery.find_ticket(config=run_config, output_dir=output_dir, strategy=strategy,
                                               log=header.then, progress=Progress(mode, before_first=header.flush)))
    except KeyboardInterrupt as e:
        print(f"lottery-find: interrupted; rerun the same command to resume {FLAGS.output_dir}", file=sys.stderr)
        return common.interrupted_status(e)
    except Exception as e:  # noqa: BLE001  (user errors and environment failures: one line each)
        return errors.report("lottery-find", e, resume=FLAGS.output_dir)
    for ticket, (_, output_dir) in zip(tickets, runs):  # the path as the user gave it
        best = ticket.best_round()
        print(
            f"done: sparsest ticket keeps {100 * ticket.weights_remaining:.2f}% of weights; best early-stop "
            f"test accuracy {best['early_stop_test_accuracy']:.4f} at round {best['round']} "
            f"({100 * best['weights_remaining']:.2f}% remaining). Results: {output_dir}"
        )
    if len(tickets) > 1:
        print(f"report: lottery-report --run_dir={FLAGS.output_dir} --out=<folder>")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
