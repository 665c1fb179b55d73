"""lottery-find: search for a winning ticket from the shell.

Flags left unset take the chosen model's preset (the paper's hyperparameters); flags given
override it. Errors in the input are reported in one line with a non-zero exit code.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from absl import app, flags, logging

import tf_lottery  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

FLAGS = flags.FLAGS

flags.DEFINE_string("model", "lenet_300_100", "Model zoo name (lenet_300_100, conv2, conv4, conv6, vgg19, resnet18).")
flags.DEFINE_string("dataset", "fashion_mnist", "Dataset: mnist, fashion_mnist or cifar10.")
flags.DEFINE_string("data_dir", None, "TFDS data_dir, or a folder with the raw IDX / CIFAR-10 binary files.")
flags.DEFINE_string("output_dir", "runs/ticket", "Run directory; rerunning the same command resumes it.")
flags.DEFINE_string("preset", "paper", "Hyperparameters for unset flags: 'paper' (the paper's) or 'fast' (4 epochs a round).")
flags.DEFINE_integer("rounds", 12, "Networks trained: round 0 is dense, round r keeps (1-p)^r of the weights.")
flags.DEFINE_integer("epochs", None, "Epochs per round (overrides the preset's iteration budget).")
flags.DEFINE_integer("iterations", None, "Iterations per round (wins over --epochs).")
flags.DEFINE_integer("batch_size", None, "Global batch size (split across replicas under a strategy).")
flags.DEFINE_float("learning_rate", None, "Learning rate.")
flags.DEFINE_string("optimizer", None, "adam or sgd.")
flags.DEFINE_float("pruning_rate", None, "Per-round pruning rate of fully connected layers (paper: 0.2).")
flags.DEFINE_float("conv_pruning_rate", None, "Per-round pruning rate of convolutions (paper: 0.1 or 0.15).")
flags.DEFINE_float("output_pruning_rate", None, "Per-round rate of the output layer (default: half its kind's rate).")
flags.DEFINE_string("pruning_scope", None, "layerwise (each layer by its own magnitudes) or global.")
flags.DEFINE_string("schedule", "iterative", "iterative (prune, rewind, retrain) or one_shot (prune the dense run's weights).")
flags.DEFINE_integer("rewind_step", 0, "Rewind survivors to the weights at this iteration of the dense run (0: theta_0).")
flags.DEFINE_list("controls", [], "Controls at each pruned level: random_reinit, random_prune.")
flags.DEFINE_float("dropout_rate", None, "Dropout rate of the model's hidden FC layers.")
flags.DEFINE_integer("eval_every", 100, "Iterations between evaluations of validation loss and test accuracy.")
flags.DEFINE_integer("checkpoint_every", 1000, "Iterations between mid-round checkpoints (0: only at round ends).")
flags.DEFINE_integer("validation_size", 5000, "Training examples held out for validation (paper: 5,000).")
flags.DEFINE_integer("train_subset", None, "Train on the first N training examples only (quick trials).")
flags.DEFINE_integer("seed", 0, "Random seed for initialization, data order and controls.")
flags.DEFINE_bool("deterministic", False, "Turn on TensorFlow op determinism (bit-identical reruns and resumes).")
flags.DEFINE_string("strategy", "default", "tf.distribute strategy: default, one_device, mirrored, multi_worker, tpu.")
flags.DEFINE_string("tpu", None, "TPU name or address for --strategy=tpu.")
flags.DEFINE_float("worker_timeout", 300.0, "multi_worker: seconds to wait for every worker at start-up and at each all-reduce.")
flags.DEFINE_integer("replicates", 1, "Independent searches with seeds seed..seed+N-1, each in output_dir/seed_<s>/ (N > 1).")
flags.DEFINE_bool("quiet", False, "Print only errors and the final line (no progress bar, no per-round lines).")
flags.DEFINE_bool("verbose", False, "Also print one line per evaluation (validation loss, test accuracy).")


def config_from_flags():
    """Build the ExperimentConfig: the model's preset, overridden by every flag the user gave."""
    from tf_lottery import config as config_lib

    import tf_lottery_models as zoo

    zoo.get_builder(FLAGS.model)  # unknown model: one line listing the known ones
    config = config_lib.from_preset(FLAGS.model, FLAGS.preset, FLAGS.dataset)
    t, p = config.training, config.pruning
    if FLAGS.iterations is not None:
        t = dataclasses.replace(t, iterations=FLAGS.iterations, epochs=None)
    elif FLAGS.epochs is not None:
        t = dataclasses.replace(t, iterations=None, epochs=FLAGS.epochs, lr_boundaries=(), warmup_iterations=0)
    overrides = {
        "batch_size": FLAGS.batch_size,
        "learning_rate": FLAGS.learning_rate,
        "optimizer": FLAGS.optimizer,
    }
    t = dataclasses.replace(t, **{k: v for k, v in overrides.items() if v is not None})
    t = dataclasses.replace(t, eval_every=FLAGS.eval_every, checkpoint_every=FLAGS.checkpoint_every)
    pruning_overrides = {
        "fc_rate": FLAGS.pruning_rate,
        "conv_rate": FLAGS.conv_pruning_rate,
        "output_rate": FLAGS.output_pruning_rate,
        "scope": FLAGS.pruning_scope,
    }
    p = dataclasses.replace(p, **{k: v for k, v in pruning_overrides.items() if v is not None})
    p = dataclasses.replace(
        p,
        rounds=FLAGS.rounds,
        schedule=FLAGS.schedule,
        rewind_step=FLAGS.rewind_step,
        controls=tuple(c.strip() for c in FLAGS.controls if c.strip()),
    )
    model = config.model
    if FLAGS.dropout_rate is not None:
        model = dataclasses.replace(model, dropout_rate=FLAGS.dropout_rate)
    config = dataclasses.replace(
        config,
        model=model,
        data=dataclasses.replace(
            config.data,
            data_dir=FLAGS.data_dir,
            validation_size=FLAGS.validation_size,
            train_subset=FLAGS.train_subset,
        ),
        training=t,
        pruning=p,
        runtime=config_lib.RuntimeConfig(
            strategy=FLAGS.strategy,
            tpu=FLAGS.tpu,
            seed=FLAGS.seed,
            deterministic=FLAGS.deterministic,
            worker_timeout=FLAGS.worker_timeout,
        ),
    )
    return config_lib.validate(config)


def replicate_runs(config, output_dir: str, replicates: int):
    """(config, run directory) per replicate: one run as given, or seeds seed.. in output_dir/seed_<s>/."""
    if replicates < 1:
        raise ValueError(f"replicates={replicates} must be an integer >= 1")
    if replicates == 1:
        return [(config, output_dir)]
    out = []
    for seed in range(config.runtime.seed, config.runtime.seed + replicates):
        runtime = dataclasses.replace(config.runtime, seed=seed)
        out.append((dataclasses.replace(config, runtime=runtime), os.path.join(output_dir, f"seed_{seed}")))
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from tf_lottery import distribute, lottery
    from tf_lottery.progress import Progress
    from tf_lottery.training import TrainingDiverged

    if FLAGS.quiet and FLAGS.verbose:
        print("lottery-find: error: --quiet and --verbose exclude each other; give at most one", file=sys.stderr)
        return 1
    mode = "quiet" if FLAGS.quiet else "verbose" if FLAGS.verbose else "normal"
    if not FLAGS.verbose and not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TF's per-checkpoint INFO lines would drown the rounds
    say = (lambda line: None) if FLAGS.quiet else (lambda line: print(line, flush=True))
    try:
        config = config_from_flags()
        runs = replicate_runs(config, FLAGS.output_dir, FLAGS.replicates)
        strategy = distribute.get_strategy(config.runtime)
        tickets = []
        for run_config, output_dir in runs:
            say(
                f"tf_lottery: {config.model.name} on {config.data.dataset}, {config.pruning.rounds} rounds, "
                f"seed {run_config.runtime.seed} -> {output_dir}"
            )
            tickets.append(
                lottery.find_ticket(
                    config=run_config,
                    output_dir=output_dir,
                    strategy=strategy,
                    log=say,
                    progress=Progress(mode),
                )
            )
    except (ValueError, TrainingDiverged, distribute.WorkerLostError) as e:
        print(f"lottery-find: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"lottery-find: interrupted; rerun the same command to resume {FLAGS.output_dir}", file=sys.stderr)
        return 130
    for ticket in tickets:
        best = ticket.best_round()
        print(
            f"done: sparsest ticket keeps {100 * ticket.weights_remaining:.2f}% of weights; best early-stop "
            f"test accuracy {best['early_stop_test_accuracy']:.4f} at round {best['round']} "
            f"({100 * best['weights_remaining']:.2f}% remaining). Results: {ticket.output_dir}"
        )
    if len(tickets) > 1:
        print(f"report: lottery-report --run_dir={FLAGS.output_dir} --out=<folder>")
    return 0


def run():
    app.run(main)


if __name__ == "__main__":
    run()
