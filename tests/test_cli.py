"""lottery-find from the shell: bad input costs one line and a non-zero exit, and writes nothing."""

import os
import re
import subprocess
import sys

import pytest

from cli_runner import run_find as run_find_here

FIND = [sys.executable, "-m", "tf_lottery.cli.find"]


def run_find(*flags, cwd=None, timeout=300):
    env = dict(os.environ, TF_LOTTERY_OFFLINE="1")
    return subprocess.run(
        FIND + list(flags), capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("lottery-find: error:")]


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--model=lenet_9000"], "unknown model 'lenet_9000'; known models: conv2, conv4, conv6, lenet_300_100"),
        (["--dataset=imagenet"], "unknown dataset 'imagenet'; known datasets: cifar10, fashion_mnist, mnist"),
        (["--fc_rate=1.5"], "fc_rate=1.5 is outside the allowed range (0, 1)"),
        (["--fc_rate=0"], "fc_rate=0.0 is outside the allowed range (0, 1)"),
        (["--conv_rate=-0.1"], "conv_rate=-0.1 is outside the allowed range (0, 1)"),
        (["--pruning_rate=0.3"], "--pruning_rate was renamed --fc_rate"),
        (["--seed=4294967296"], "seed=4294967296 must be an integer in 0..4294967295"),
        (["--output_dir="], "output_dir='' is empty"),
        (["--validation_size=0"], "validation_size=0 must be an integer in 1..100000000"),
        (["--pruning_strategy=magic"], "unknown pruning_strategy 'magic'; allowed: magnitude, random"),
        (["--optimizer=lbfgs"], "unknown optimizer 'lbfgs'; allowed: adam, adamw, sgd"),
        (["--retrain=sometimes"], "unknown retrain 'sometimes'; allowed: weight_rewind, lr_rewind, finetune"),
        (["--rounds=0"], "rounds=0 must be an integer in 1..10000"),
        (["--controls=random_reinit,lucky"], "unknown control 'lucky'; allowed: random_reinit, random_prune, sign_reinit, inverted"),
        (["--strategy=quantum"], "unknown strategy 'quantum'; allowed: default, one_device, mirrored"),
        (["--pruning_scope=radial"], "unknown pruning_scope 'radial'; allowed: layerwise, global, global_all"),
        (
            ["--iterations=50", "--rewind_step=50"],
            "rewind_step=50 is past the end of training (50 iterations); allowed: 0 <= rewind_step < 50",
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, flags, expected):
    out = tmp_path / "run"
    code, stdout, stderr = run_find_here(f"--output_dir={out}", "--train_subset=500", *flags)
    assert code != 0
    errors = error_lines(stderr)
    assert len(errors) == 1 and stderr.count("\n") == 1, stderr
    assert expected in errors[0]
    assert stdout == ""  # no header line, as if the run had started
    assert not out.exists()


def test_help_names_the_registries_choices():
    """--pruning_strategy and --controls take names from registries; their help lists them."""
    result = subprocess.run(FIND + ["--helpfull"], capture_output=True, text=True, timeout=120)
    text = " ".join(result.stdout.split())
    from tf_lottery import branches, strategies

    assert "Allowed: " + ", ".join(strategies.names()) + "." in text
    assert "Allowed: " + ", ".join(branches.controls()) + "." in text


def test_a_real_process_prints_only_the_error_line(tmp_path):
    """In a new process TensorFlow's start-up lines would come first: lottery-find silences them."""
    result = run_find("--fc_rate=1.5", f"--output_dir={tmp_path / 'run'}")
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["lottery-find: error: fc_rate=1.5 is outside the allowed range (0, 1)"]


def test_unavailable_dataset_says_how_to_provide_it(tmp_path):
    """A --data_dir that holds none of the dataset is refused in one line naming it and what was looked for."""
    (tmp_path / "nothing").mkdir()
    result = run_find("--dataset=mnist", f"--data_dir={tmp_path}/nothing", f"--output_dir={tmp_path}/run")
    assert result.returncode != 0
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and "'mnist'" in errors[0] and f"{tmp_path}/nothing" in errors[0], result.stderr
    assert "is empty" in errors[0] and "train-images-idx3-ubyte" in errors[0], errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_output_dir_that_is_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_find("--iterations=20", "--rounds=1", "--train_subset=300", f"--output_dir={blocker}/run")
    assert result.returncode != 0
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and "cannot be created" in errors[0], result.stderr
    assert blocker.read_text() == "not a directory"


def test_a_tiny_real_run_prints_one_line_per_round(tmp_path):
    out = tmp_path / "run"
    result = run_find(
        "--rounds=2", "--iterations=30", "--eval_every=10", "--train_subset=600",
        "--controls=random_reinit", f"--output_dir={out}",
    )
    assert result.returncode == 0, result.stderr
    rounds = [line for line in result.stdout.splitlines() if re.match(r"round +\d+ \| weights remaining", line)]
    assert len(rounds) == 2
    assert "weights remaining 100.00%" in rounds[0]
    assert "random_reinit" in rounds[1]
    for needle in ("test acc", "early stop it", " s"):
        assert needle in rounds[1]
    assert (out / "summary.json").exists() and (out / "rounds.csv").exists()
    assert (out / "round_01" / "checkpoint").is_dir()
