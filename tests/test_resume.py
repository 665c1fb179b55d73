"""Crashes and bad input: kill -9 at any point resumes to the bit-identical result, and a user's
mistake costs one line and changes nothing in the run directory."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tf_lottery
from tf_lottery.search.training import TrainingDiverged

FIND = [sys.executable, "-m", "tf_lottery.cli.find"]
SMALL = [
    "--model=lenet_300_100", "--dataset=fashion_mnist", "--train_subset=3000", "--rounds=3",
    "--iterations=240", "--eval_every=40", "--checkpoint_every=40",
    "--controls=random_reinit,random_prune", "--deterministic", "--seed=3",
]


def env():
    return dict(os.environ, TF_LOTTERY_OFFLINE="1")


def find(out, *flags, check=True):
    result = subprocess.run(FIND + SMALL + [f"--output_dir={out}"] + list(flags),
                            capture_output=True, text=True, timeout=600, env=env())
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def snapshot_files(directory) -> dict:
    """Every file's bytes, to prove a failed command changed nothing."""
    out = {}
    for root, _, files in os.walk(directory):
        for name in files:
            if name == ".lock" and root == str(directory):
                continue  # holds the pid of the last writer
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = f.read()
    return out


def assert_every_file_whole(directory):
    """No JSON or NumPy file of the run is half-written (temporaries may be left by a kill)."""
    for root, _, files in os.walk(directory):
        for name in files:
            if name.startswith(".") and name.endswith(".tmp") or ".tmp" in root:
                continue
            path = os.path.join(root, name)
            if name.endswith(".json"):
                with open(path) as f:
                    json.load(f)
            elif name.endswith(".npz"):
                with np.load(path, allow_pickle=False) as data:
                    for key in data.files:
                        data[key]


def read_state(out):
    try:
        with open(os.path.join(out, "in_progress", "state.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def kill_when(out, condition, timeout=300):
    """Start the run, SIGKILL it as soon as `condition(out)` holds; True if it was killed mid-run."""
    process = subprocess.Popen(FIND + SMALL + [f"--output_dir={out}", "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and process.poll() is None:
            if condition(out):
                process.send_signal(signal.SIGKILL)
                process.wait()
                return True
            time.sleep(0.01)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return False


def without_seconds(value):
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [without_seconds(v) for v in value]
    return value


def checkpoint_values(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if "OBJECT_GRAPH" not in k}


@pytest.mark.slow
def test_kill_9_at_several_points_resumes_to_the_identical_result(tmp_path):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    find(reference)

    mid_round = lambda out: (read_state(out) or {}).get("round") == 1 and read_state(out)["stage"] == "main"
    after_checkpoint = lambda out: os.path.exists(os.path.join(out, "round_01", "checkpoint", "ticket.index"))
    in_control = lambda out: (read_state(out) or {}).get("stage") in ("random_reinit", "random_prune") and (
        read_state(out) or {}).get("round") == 2
    kills = 0
    for condition in (mid_round, after_checkpoint, in_control):
        kills += kill_when(killed, condition)
        assert_every_file_whole(killed)
    assert kills >= 2, "the run finished before it could be killed"
    find(killed)
    assert_every_file_whole(killed)

    ref = json.loads((reference / "summary.json").read_text())
    got = json.loads((killed / "summary.json").read_text())
    assert without_seconds(got["rounds"]) == without_seconds(ref["rounds"])
    for r in range(3):
        name = f"round_{r:02d}"
        for stage in ["main"] + (["random_reinit", "random_prune"] if r else []):
            a = json.loads((reference / name / f"{stage}.json").read_text())
            b = json.loads((killed / name / f"{stage}.json").read_text())
            assert without_seconds(a) == without_seconds(b), (name, stage)
        with np.load(reference / name / "masks.npz") as a, np.load(killed / name / "masks.npz") as b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                assert np.array_equal(a[key], b[key])
        a = checkpoint_values(str(reference / name / "checkpoint" / "ticket"))
        b = checkpoint_values(str(killed / name / "checkpoint" / "ticket"))
        assert a.keys() == b.keys()
        for key in a:
            assert np.array_equal(a[key], b[key]), (name, key)
    assert not (killed / "in_progress").exists()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    subprocess.run(
        FIND + ["--train_subset=600", "--rounds=2", "--iterations=20", "--eval_every=10",
                "--controls=random_reinit", f"--output_dir={out}"],
        check=True, capture_output=True, timeout=300, env=env(),
    )
    return out


def rerun(out, *flags):
    """The finished run's command again (with `flags`), in this process: a new one costs seconds of start-up."""
    from types import SimpleNamespace

    from cli_runner import run_find

    code, stdout, stderr = run_find("--train_subset=600", "--rounds=2", "--iterations=20", "--eval_every=10",
                                    "--controls=random_reinit", f"--output_dir={out}", *flags)
    return SimpleNamespace(returncode=code, stdout=stdout, stderr=stderr)


def one_error_line(result) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("lottery-find: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_rerunning_a_finished_run_recomputes_and_rewrites_nothing(finished_run, tmp_path):
    out = copy_run(finished_run, tmp_path / "run")
    before = snapshot_files(out)
    result = rerun(out)
    assert result.returncode == 0, result.stderr
    assert snapshot_files(out) == before
    assert "round  1" in result.stdout


def test_resuming_with_other_hyperparameters_is_refused(finished_run, tmp_path):
    out = copy_run(finished_run, tmp_path / "run")
    before = snapshot_files(out)
    line = one_error_line(rerun(out, "--fc_rate=0.3", "--learning_rate=0.01"))
    assert "different hyperparameters" in line
    assert "(learning_rate, fc_rate)" in line
    assert snapshot_files(out) == before


def test_more_rounds_extend_a_finished_run(finished_run, tmp_path):
    out = copy_run(finished_run, tmp_path / "run")
    before = json.loads((out / "summary.json").read_text())["rounds"]
    result = rerun(out, "--rounds=3")
    assert result.returncode == 0, result.stderr
    after = json.loads((out / "summary.json").read_text())["rounds"]
    assert len(after) == 3 and after[:2] == before
    assert after[2]["weights_remaining"] < after[1]["weights_remaining"]
    # A fresh optimizer each round: the extension's first evaluation is at iteration 10, not 30.
    history = json.loads((out / "round_02" / "main.json").read_text())["history"]
    assert history[0]["iteration"] == 10


def test_truncated_mask_file_is_one_line_and_changes_nothing(finished_run, tmp_path):
    out = copy_run(finished_run, tmp_path / "run")
    path = out / "round_01" / "masks.npz"
    path.write_bytes(path.read_bytes()[:100])
    before = snapshot_files(out)
    line = one_error_line(rerun(out))
    assert "round_01/masks.npz" in line and "corrupted" in line
    assert snapshot_files(out) == before


def test_mask_file_from_another_model_is_refused(finished_run, tmp_path):
    out = copy_run(finished_run, tmp_path / "run")
    np.savez(out / "round_01" / "masks.npz", fc1=np.ones((10, 10), np.float32))
    before = snapshot_files(out)
    line = one_error_line(rerun(out))
    assert "does not fit this model" in line and "fc1" in line
    assert snapshot_files(out) == before


def test_corrupted_mid_round_checkpoint_is_one_line(finished_run, tmp_path):
    out = copy_run(finished_run, tmp_path / "run")
    (out / "in_progress").mkdir()
    evaluation = {"iteration": 10, "train_loss": 1.0, "validation_loss": 1.0, "validation_accuracy": 0.5,
                  "test_loss": 1.0, "test_accuracy": 0.5}
    (out / "in_progress" / "state.json").write_text(json.dumps(
        {"round": 1, "stage": "main", "iteration": 10, "history": [evaluation], "seconds": 1.0}))
    (out / "in_progress" / "state.index").write_bytes(b"\x00garbage")
    before = snapshot_files(out)
    line = one_error_line(rerun(out))
    assert "in_progress" in line and "corrupted" in line
    assert snapshot_files(out) == before


def test_nan_loss_stops_the_round_and_keeps_earlier_rounds(tmp_path):
    from tf_lottery.data import datasets as data

    splits = data.load("fashion_mnist")
    splits = dataclasses.replace(splits, train_images=splits.train_images[:600], train_labels=splits.train_labels[:600])
    cfg = tf_lottery.from_preset("lenet_300_100", "fast")
    cfg = dataclasses.replace(
        cfg,
        training=dataclasses.replace(cfg.training, iterations=20, epochs=None, eval_every=10),
        pruning=dataclasses.replace(cfg.pruning, rounds=3),
    )

    class PoisonSecondRound(keras.callbacks.Callback):
        """Turn the output bias into NaNs when round 1 starts training."""

        calls = 0

        def on_train_begin(self, logs=None):
            PoisonSecondRound.calls += 1
            if PoisonSecondRound.calls == 2:
                bias = self.model.trainable_weights[-1]  # the output layer's: logits become NaN
                bias.assign(np.full(bias.shape, np.nan, np.float32))

    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged) as error:
        tf_lottery.find_ticket(config=cfg, splits=splits, output_dir=str(out), callbacks=[PoisonSecondRound()])
    assert "\n" not in str(error.value) and "nan" in str(error.value).lower()
    summary = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0]
    assert (out / "round_00" / "main.json").exists()
    assert not (out / "round_01" / "main.json").exists()


def test_nan_loss_from_the_shell_is_one_line(tmp_path):
    result = subprocess.run(
        FIND + ["--train_subset=600", "--rounds=2", "--iterations=40", "--eval_every=10",
                "--optimizer=sgd", "--learning_rate=1000", f"--output_dir={tmp_path / 'run'}"],
        capture_output=True, text=True, timeout=300, env=env(),
    )
    line = one_error_line(result)
    assert "training loss became" in line


def test_empty_training_set_is_refused(tmp_path):
    from tf_lottery.data import datasets as data

    splits = data.load("fashion_mnist")
    empty = dataclasses.replace(splits, train_images=splits.train_images[:0], train_labels=splits.train_labels[:0])
    with pytest.raises(ValueError, match="empty"):
        tf_lottery.find_ticket(config=tf_lottery.from_preset("lenet_300_100", "fast"), splits=empty)


def test_pickled_arrays_are_never_loaded(finished_run, tmp_path):
    out = copy_run(finished_run, tmp_path / "run")
    np.savez(out / "round_01" / "masks.npz", fc1=np.array([{"evil": 1}], dtype=object))
    before = snapshot_files(out)
    line = one_error_line(rerun(out))
    assert "round_01/masks.npz" in line
    assert snapshot_files(out) == before


def test_a_rewind_point_is_saved_once_and_reused_on_resume(finished_run, tmp_path):
    out = tmp_path / "rewind"
    flags = ["--train_subset=600", "--rounds=2", "--iterations=20", "--eval_every=10",
             "--rewind_step=5", f"--output_dir={out}"]
    first = subprocess.run(FIND + flags, capture_output=True, text=True, timeout=300, env=env())
    assert first.returncode == 0, first.stderr
    rewind = np.load(out / "rewind.npz", allow_pickle=False)
    initial = np.load(out / "initial.npz", allow_pickle=False)
    assert rewind.files == initial.files
    assert any(not np.array_equal(rewind[k], initial[k]) for k in rewind.files)  # theta_5, not theta_0
    before = snapshot_files(out)
    again = subprocess.run(FIND + flags, capture_output=True, text=True, timeout=300, env=env())
    assert again.returncode == 0, again.stderr
    assert snapshot_files(out) == before
    assert not (finished_run / "rewind.npz").exists()  # rewind_step 0: theta_0 lives in initial.npz only


def as_version_1(out):
    """Rewrite a run as tf_lottery 0.1 wrote it: old config names, no record fields, no all_weights_remaining."""
    record = json.loads((out / "config.json").read_text())
    config = record["config"]
    config["model"]["name"] = config["model"].pop("model")
    config["pruning"]["scope"] = config["pruning"].pop("pruning_scope")
    for section, field in (("training", "jit_compile"), ("pruning", "pruning_strategy"), ("pruning", "retrain")):
        config[section].pop(field)
    (out / "config.json").write_text(json.dumps({"config": config, "fingerprint": record["fingerprint"]}))
    for path in out.glob("round_*/*.json"):
        result = json.loads(path.read_text())
        result.pop("all_weights_remaining", None)
        path.write_text(json.dumps(result))


def test_a_run_of_tf_lottery_0_1_resumes_and_extends(finished_run, tmp_path):
    out = copy_run(finished_run, tmp_path / "run")
    as_version_1(out)
    stages = {p: p.read_bytes() for p in out.glob("round_*/*.json")}
    result = rerun(out)
    assert result.returncode == 0, result.stderr
    assert {p: p.read_bytes() for p in out.glob("round_*/*.json")} == stages  # nothing retrained
    assert json.loads((out / "config.json").read_text())["config"]["model"]["name"] == "lenet_300_100"  # kept as written
    extended = rerun(out, "--rounds=3")
    assert extended.returncode == 0, extended.stderr
    assert [r["round"] for r in json.loads((out / "summary.json").read_text())["rounds"]] == [0, 1, 2]
