"""Hand-made run directories for the report tests: the files lottery-find writes, with numbers set by hand.

Round r of the ticket has end-of-training test accuracy accuracies[r], early-stop accuracy +0.01 at
iteration 100*(r % 3 + 1); the controls (from round 1) are 0.1 and 0.2 lower, early stop at 300.
Weights remaining are 100%, 80%, 64%, ... (REMAINING).
"""

import json
import os

from tf_lottery import config as config_lib
from tf_lottery.search.run_checks import stage_row
from tf_lottery.search.run_directory import RunDirectory

REMAINING = [1.0, 0.8, 0.64, 0.512]
LAYERS = [{"fc1": 1.0, "out": 1.0}, {"fc1": 0.8, "out": 0.9}, {"fc1": 0.64, "out": 0.81}, {"fc1": 0.512, "out": 0.729}]
CONTROL_OFFSETS = (0.1, 0.2)


def lottery_report(capsys, *args):
    """Run the lottery-report CLI in-process: (exit status, stderr lines, stdout)."""
    from cli_runner import run_main

    status = run_main("report", *args)
    captured = capsys.readouterr()
    return status, captured.err.splitlines(), captured.out


def experiment(rounds=3, controls=("random_reinit", "random_prune"), seed=0, **fields):
    """A small Lenet config; `fields` override by flat name (retrain="lr_rewind", fc_rate=0.3, ...)."""
    config = config_lib.ExperimentConfig()
    return config_lib.override(config, rounds=rounds, controls=tuple(controls), seed=seed, iterations=300,
                               eval_every=100, **fields)


def history(final_accuracy, best_iteration):
    """Three evaluations; validation loss is lowest at `best_iteration`; accuracy rises to `final_accuracy`."""
    return [
        {"iteration": it, "train_loss": 1.0 / it, "validation_loss": 0.1 if it == best_iteration else 0.5,
         "validation_accuracy": 0.0, "test_loss": 0.0, "test_accuracy": final_accuracy - 0.01 * (3 - it // 100)}
        for it in (100, 200, 300)
    ]


def stage(accuracy, early_accuracy, early_iteration, remaining, layers):
    """A stage result as `round_RR/<stage>.json` holds it (every key run_checks.check_stage wants)."""
    return {"test_accuracy": accuracy, "validation_loss": 0.5, "early_stop_iteration": early_iteration,
            "early_stop_test_accuracy": early_accuracy, "early_stop_validation_loss": 0.1, "iterations": 300,
            "seconds": 1.0, "history": history(accuracy, early_iteration), "weights_remaining": remaining,
            "layers": layers}


def write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(value, f)


def make_run(path, accuracies, controls=("random_reinit", "random_prune"), rounds_in_summary=3, rounds=3,
             extra_main=(), seed=0, remaining=REMAINING, **fields):
    """A run directory as lottery-find leaves it (config.json, round files, summary.json, rounds.csv).

    The summary lists the first `rounds_in_summary` rounds; `extra_main` rounds have only main.json
    (finished after the last summary). `remaining` gives each round's weights remaining; `fields`
    go into the config (see `experiment`).
    """
    config = experiment(rounds, controls, seed, **fields)
    record = {"version": config_lib.CONFIG_VERSION, "config": config.to_dict(), "fingerprint": config.fingerprint()}
    run = RunDirectory(path)
    os.makedirs(path)
    write_json(run.config_file, record)
    rows = []
    for r in range(rounds_in_summary + len(extra_main)):
        main = stage(accuracies[r], accuracies[r] + 0.01, 100 * (r % 3 + 1), remaining[r], LAYERS[r])
        write_json(run.stage_file(r, "main"), main)
        if r >= rounds_in_summary:
            continue
        results = {}
        for offset, control in zip(CONTROL_OFFSETS, controls):
            if r > 0:
                results[control] = stage(accuracies[r] - offset, accuracies[r] - offset, 300, remaining[r], LAYERS[r])
                write_json(run.stage_file(r, control), results[control])
        rows.append(stage_row(r, main, results))
    run.write_summary(record, rows)
    return path


def make_version_1_summary_only(path, accuracies):
    """A run copied before version 2 with only summary.json: config keys `model.name`, `pruning.scope`."""
    config = experiment(controls=()).to_dict()
    config["model"]["name"] = config["model"].pop("model")
    config["pruning"]["scope"] = config["pruning"].pop("pruning_scope")
    for section, key in (("pruning", "retrain"), ("pruning", "pruning_strategy"), ("training", "jit_compile")):
        config[section].pop(key)
    rows = [stage_row(r, stage(a, a + 0.01, 100, REMAINING[r], LAYERS[r]), {}) for r, a in enumerate(accuracies)]
    write_json(os.path.join(path, "summary.json"), {"config": config, "fingerprint": "0123456789abcdef", "rounds": rows})
    return path
