"""Instability analysis of a run (tf_lottery.analysis.instability, lottery-instability, lottery-report's plots).

The math (interpolation, barrier) is tested in test_instability.py; here it runs end to end on a
tiny real search: Lenet on 600 Fashion-MNIST examples, 40 iterations a network, 5 points a path.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tf_lottery
from instability_runs import ITERATIONS, files_under, tiny_config
from report_fixtures import make_run
from tf_lottery import config as C
from tf_lottery.analysis import linear_path as instability, instability as stability
from tf_lottery.report import writer as report

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("stability") / "run")
    tf_lottery.find_ticket(config=tiny_config(), output_dir=path, log=lambda line: None)
    return path


def quiet(lines):
    return lambda line: lines.append(line)


def folder(run_dir, level, k, **kwargs):
    return tf_lottery.search.run_directory.RunDirectory(run_dir).instability_dir(level, k, **kwargs)


def read_json(path):
    with open(path) as f:
        return json.load(f)


# -- a known answer ----------------------------------------------------------------------------------
def test_copies_with_the_same_data_order_have_barrier_exactly_0(run_dir):
    (row,) = stability.analyze(run_dir, levels=[1], rewind_steps=[20], points=5, same_data_order=True, log=quiet([]))
    where = folder(run_dir, 1, 20, same_data_order=True)
    with open(os.path.join(where, "a.npz"), "rb") as a, open(os.path.join(where, "b.npz"), "rb") as b:
        assert a.read() == b.read()  # the same start, mask, seed and data order: the same network
    assert row["seeds"][0] == row["seeds"][1] and row["same_data_order"]
    assert row["barrier"] == 0.0
    assert row["errors"] == [row["errors"][0]] * 5
    assert row["endpoint_errors"][0] == row["endpoint_errors"][1] == row["errors"][0]
    # Kept apart from the real analysis of that pair, and never drawn by the report.
    assert not os.path.exists(folder(run_dir, 1, 20))


# -- a tiny real run -----------------------------------------------------------------------------------
def test_a_sweep_over_levels_and_rewind_steps(run_dir):
    lines = []
    rows = stability.analyze(run_dir, levels=(0, 1), rewind_steps="20,0", points=5, log=quiet(lines))
    assert [(r["level"], r["rewind_step"]) for r in rows] == [(0, 0), (0, 20), (1, 0), (1, 20)]
    assert sum(line.startswith("level ") for line in lines) == 4
    for row in rows:
        where = folder(run_dir, row["level"], row["rewind_step"])
        assert read_json(os.path.join(where, "path.json")) == row
        assert row["alphas"] == list(np.linspace(0, 1, 5)) and len(row["errors"]) == 5
        assert row["barrier"] >= 0 and row["barrier"] == instability.error_barrier(row["errors"])
        assert row["iterations"] == ITERATIONS - row["rewind_step"]
        a, b = (read_json(os.path.join(where, f"{c}.json")) for c in "ab")
        # The path's ends are the copies themselves: their own evaluation at the end of training.
        assert row["endpoint_errors"] == [1 - a["test_accuracy"], 1 - b["test_accuracy"]]
        assert [row["errors"][0], row["errors"][-1]] == row["endpoint_errors"]
        assert a["iterations"] == b["iterations"] == ITERATIONS - row["rewind_step"]
        assert row["seeds"][0] != row["seeds"][1]
        weights = [np.load(os.path.join(where, f"{c}.npz")) for c in "ab"]
        assert any(not np.array_equal(weights[0][k], weights[1][k]) for k in weights[0].files)
    dense, sparse = rows[0], rows[2]
    assert dense["weights_remaining"] == 1.0 and 0.75 < sparse["weights_remaining"] < 0.85
    # One dense training recorded theta_k for k = 20; theta_0 is the run's own initial.npz.
    assert sorted(os.listdir(os.path.join(run_dir, "instability", "theta_k"))) == ["k_00020.npz"]
    # The copies of level 1 keep its mask: pruned weights are 0.
    masks = np.load(os.path.join(run_dir, "round_01", "masks.npz"))
    for c in "ab":
        weights = np.load(os.path.join(folder(run_dir, 1, 20), f"{c}.npz"))  # Lenet: kernel, bias per layer
        for layer, key in (("fc1", "w0000"), ("fc2", "w0002"), ("output", "w0004")):
            assert np.count_nonzero(weights[key][masks[layer] == 0]) == 0
            assert np.count_nonzero(weights[key]) == np.count_nonzero(masks[layer])


def test_theta_k_is_the_dense_run_at_iteration_k(run_dir, tmp_path):
    """Same seed, data order and optimizer as round 0: a run rewinding to k records the same weights."""
    stability.analyze(run_dir, levels=[0], rewind_steps=[20], points=5, log=quiet([]))
    other = str(tmp_path / "rewind_20")
    tf_lottery.find_ticket(config=tiny_config(rounds=1, rewind_step=20), output_dir=other, log=lambda line: None)
    ours = np.load(os.path.join(run_dir, "instability", "theta_k", "k_00020.npz"))
    theirs = np.load(os.path.join(other, "rewind.npz"))
    assert ours.files == theirs.files
    for key in ours.files:
        np.testing.assert_array_equal(ours[key], theirs[key])


# -- resuming ------------------------------------------------------------------------------------------
class CrashAt:
    """A progress bar that raises (a stand-in for a kill) at the evaluation of `iteration` of `stage`."""

    def __init__(self, stage, iteration):
        self.stage, self.iteration, self.current = stage, iteration, None

    def begin(self, round_index, stage, start, total):
        self.current = stage

    def update(self, evaluation):
        if self.current == self.stage and evaluation.iteration == self.iteration:
            raise KeyboardInterrupt("killed")

    def end(self):
        pass


def test_a_rerun_rewrites_nothing_and_a_lost_file_is_recomputed_alone(run_dir):
    sweep = dict(levels=(0, 1), rewind_steps=(0, 20), points=5)
    first = stability.analyze(run_dir, **sweep, log=quiet([]))
    before = files_under(os.path.join(run_dir, "instability"))

    lines = []
    assert stability.analyze(run_dir, **sweep, log=quiet(lines)) == first
    assert files_under(os.path.join(run_dir, "instability")) == before  # same bytes, never rewritten
    assert all(line.startswith(("level ", "data: ")) for line in lines)

    # path.json lost: recomputed from the copies on disk, nothing trained; the same bytes again.
    lost = os.path.join(os.path.relpath(folder(run_dir, 1, 20), os.path.join(run_dir, "instability")), "path.json")
    os.unlink(os.path.join(run_dir, "instability", lost))
    lines = []
    stability.analyze(run_dir, **sweep, log=quiet(lines))
    after = files_under(os.path.join(run_dir, "instability"))
    changed = sorted(k for k in after if after[k] != before[k])
    assert changed == [lost] and after[lost][0] == before[lost][0]
    assert all(line.startswith(("level ", "data: ")) for line in lines)


def test_a_copy_killed_mid_way_resumes_from_its_checkpoint_bit_for_bit(run_dir):
    stability.analyze(run_dir, levels=[1], rewind_steps=[0], points=5, log=quiet([]))
    where = folder(run_dir, 1, 0)
    before = files_under(where)
    for name in ("b.npz", "b.json", "path.json"):
        os.unlink(os.path.join(where, name))

    crash = CrashAt("instability_k0_b", ITERATIONS)  # after its checkpoint at iteration 20
    with pytest.raises(KeyboardInterrupt):
        stability.analyze(run_dir, levels=[1], rewind_steps=[0], points=5, log=quiet([]), progress=crash)
    assert os.path.isdir(os.path.join(where, "in_progress")) and not os.path.exists(os.path.join(where, "b.npz"))

    lines = []
    stability.analyze(run_dir, levels=[1], rewind_steps=[0], points=5, log=quiet(lines))
    assert "resuming round 1 (instability_k0_b) at iteration 20" in lines
    after = files_under(where)
    assert sorted(after) == sorted(before) and not os.path.exists(os.path.join(where, "in_progress"))
    assert after["a.npz"] == before["a.npz"] and after["a.json"] == before["a.json"]  # copy a untouched
    assert after["b.npz"][0] == before["b.npz"][0]  # resumed = uninterrupted, bit for bit
    assert after["path.json"][0] == before["path.json"][0]


def test_damaged_files_are_one_line_and_nothing_is_written(run_dir, tmp_path):
    stability.analyze(run_dir, levels=[0], rewind_steps=[0], points=5, log=quiet([]))
    copy = str(tmp_path / "copy")
    shutil.copytree(run_dir, copy)
    where = folder(copy, 0, 0)
    with open(os.path.join(where, "path.json"), "w") as f:
        f.write('{"level": 0')
    before = files_under(copy)
    with pytest.raises(ValueError, match="path.json is truncated or corrupted") as info:
        stability.analyze(copy, levels=[0], rewind_steps=[0], points=5, log=quiet([]))
    assert "\n" not in str(info.value)
    row = read_json(os.path.join(folder(run_dir, 0, 0), "path.json"))
    row["barrier"] += 0.1
    with open(os.path.join(where, "path.json"), "w") as f:
        json.dump(row, f)
    with pytest.raises(ValueError, match="has barrier"):
        stability.analyze(copy, levels=[0], rewind_steps=[0], points=5, log=quiet([]))
    after = files_under(copy)
    assert {k for k in after if k != ".lock" and after[k] != before.get(k)} == {"instability/level_00_k_00000/path.json"}


# -- the command line ----------------------------------------------------------------------------------
def lottery_instability(*flags):
    env = dict(os.environ, TF_LOTTERY_OFFLINE="1")
    return subprocess.Popen([sys.executable, "-m", "tf_lottery.cli.instability", *flags], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.integration
def test_cli_prints_one_line_per_result_and_one_line_per_error(run_dir, tmp_path):
    stability.analyze(run_dir, levels=[0], rewind_steps=[0, 20], points=5, log=quiet([]))
    cases = {
        "missing run": ([f"--run_dir={tmp_path / 'nothing'}"], "does not exist"),
        "level not finished": ([f"--run_dir={run_dir}", "--levels=0,5"], "round 5 of"),
        "k past the end": ([f"--run_dir={run_dir}", f"--rewind_steps=0,{ITERATIONS}"],
                           f"rewind_steps value {ITERATIONS} is past the end of training ({ITERATIONS} iterations); "
                           f"allowed: 0 <= rewind step < {ITERATIONS}"),
    }
    # Run side by side: each pays TensorFlow's start-up.
    started = {name: lottery_instability(*flags) for name, (flags, _) in cases.items()}
    done = lottery_instability(f"--run_dir={run_dir}", "--rewind_steps=0,20", "--points=5", "--quiet")
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 1, (name, stderr)
        assert stderr.startswith("lottery-instability: error: ") and stderr.count("\n") == 1, (name, stderr)
        assert cases[name][1] in stderr, (name, stderr)
    stdout, stderr = done.communicate(timeout=300)
    assert done.returncode == 0, stderr
    lines = stdout.splitlines()
    assert [line.split("|")[2].split() for line in lines[:2]] == [["rewind", "step", "0"], ["rewind", "step", "20"]]
    assert lines[2].startswith("done: 2 instability result(s)") and len(lines) == 3


@pytest.mark.parametrize("arguments, message", [
    (dict(rewind_steps="0,ten"), "rewind_steps value 'ten' is not an integer >= 0"),
    (dict(levels=[-1]), "levels value -1 is not an integer >= 0"),
    (dict(levels=[]), "levels is empty"),
    (dict(points=1), "points=1 must be an integer in 2..1000"),
    (dict(points=1001), "points=1001 must be an integer in 2..1000"),
])
def test_bad_arguments_are_one_line(run_dir, arguments, message):
    with pytest.raises(ValueError, match=message) as info:
        stability.analyze(run_dir, **arguments, log=quiet([]))
    assert "\n" not in str(info.value)


# -- the report ----------------------------------------------------------------------------------------
def path_fixture(run, level, k, remaining, errors):
    """A path.json as stability writes it, errors set by hand."""
    row = {"level": level, "rewind_step": k, "weights_remaining": remaining, "iterations": 300 - k,
           "seeds": [1, 2], "same_data_order": False, "alphas": list(np.linspace(0, 1, len(errors))),
           "errors": errors, "barrier": instability.error_barrier(errors), "endpoint_errors": [errors[0], errors[-1]]}
    where = folder(run, level, k)
    os.makedirs(where)
    with open(os.path.join(where, "path.json"), "w") as f:
        json.dump(row, f)


def test_report_draws_instability_from_path_files(tmp_path):
    runs = []
    for seed, bump in ((0, 0.30), (1, 0.40)):
        run = make_run(str(tmp_path / "runs" / f"seed_{seed}"), [0.80, 0.84, 0.86], seed=seed)
        path_fixture(run, 0, 0, 1.0, [0.10, bump, 0.12])
        path_fixture(run, 0, 100, 1.0, [0.10, 0.11, 0.10])
        path_fixture(run, 2, 0, 0.64, [0.10, 0.20, 0.10])
        path_fixture(run, 2, 100, 0.64, [0.10, 0.10, 0.10])
        runs.append(run)
    os.makedirs(folder(runs[0], 2, 500))  # a pair still training: a note, not an error
    out = str(tmp_path / "report")
    result = report.write_report([str(tmp_path / "runs")], out, levels=(64.0,), data_out=str(tmp_path / "data"))

    assert {os.path.basename(f) for f in result.files} >= {"instability.png", "instability_paths.png"}
    assert any("level 2 from rewind step 500 not finished" in n for n in result.notes)
    curves = read_json(os.path.join(out, "curves.json"))
    dense = curves["instability/level_00"]
    assert dense["label"] == "dense (100%)" and dense["x"] == [0, 100]
    np.testing.assert_allclose(dense["mean"], [0.24, 0.01])  # (0.30 - 0.11 + 0.40 - 0.11) / 2, then 0.11 - 0.10
    np.testing.assert_allclose(dense["low"], [0.19, 0.01])
    np.testing.assert_allclose(dense["high"], [0.29, 0.01])
    np.testing.assert_allclose(curves["instability/level_02"]["mean"], [0.10, 0.0])
    # The paths drawn: the level nearest 64% (level 2), each k, errors versus alpha.
    assert sorted(k for k in curves if k.startswith("instability_path/")) == [
        "instability_path/level_02/k_00000", "instability_path/level_02/k_00100"]
    np.testing.assert_allclose(curves["instability_path/level_02/k_00000"]["x"], [0, 0.5, 1])
    np.testing.assert_allclose(curves["instability_path/level_02/k_00000"]["mean"], [0.10, 0.20, 0.10])
    with open(os.path.join(out, "report.md")) as f:
        text = f.read()
    assert "## Instability" in text and "| 0 | 100.00 | 0 | run's | - | 24.00 (19.00-29.00) |" in text
    assert "| 2 | 64.00 | 100 | run's | - | 0.00 (0.00-0.00) | 10.00 (10.00-10.00) |" in text and "![Instability (error barrier) versus rewind step](instability.png)" in text
    # --data_out copies the path files, and a report of the copy draws the same numbers.
    assert os.path.isfile(os.path.join(tmp_path, "data", "seed_0", "instability", "level_02_k_00100", "path.json"))
    again = report.write_report([str(tmp_path / "data")], str(tmp_path / "report2"), levels=(64.0,))
    assert read_json(os.path.join(tmp_path, "report2", "curves.json"))["instability/level_00"] == dense
    assert again.notes == []


def test_a_run_without_instability_has_no_instability_plots(tmp_path):
    run = make_run(str(tmp_path / "run"), [0.80, 0.84, 0.86])
    result = report.write_report([run], str(tmp_path / "out"))
    assert [os.path.basename(f) for f in result.files] == [
        "report.md", "accuracy.png", "early_stop.png", "training.png", "layers.png", "curves.json"]
    assert result.notes == []


# -- under a distribution strategy ---------------------------------------------------------------------
MIRRORED = """
import tf_lottery, tensorflow as tf, json, sys
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
from tf_lottery.search import distribute
from tf_lottery.analysis import instability as stability
from tf_lottery.config import RuntimeConfig
strategy = distribute.get_strategy(RuntimeConfig(strategy="mirrored"))
rows = stability.analyze(sys.argv[1], levels=[1], rewind_steps=[0], points=5, strategy=strategy, log=lambda l: None)
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "rows": rows}))
"""


@pytest.mark.integration
def test_mirrored_strategy_over_two_devices(run_dir, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("instability"))
    env = dict(os.environ, TF_LOTTERY_OFFLINE="1")
    result = subprocess.run([sys.executable, "-c", MIRRORED, copy], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["replicas"] == 2
    (row,) = out["rows"]
    assert row["barrier"] >= 0 and row["barrier"] == instability.error_barrier(row["errors"])
    assert [row["errors"][0], row["errors"][-1]] == row["endpoint_errors"]
    # Same seeds and start as the single-device analysis: the same training up to float summation order.
    (single,) = stability.analyze(run_dir, levels=[1], rewind_steps=[0], points=5, log=quiet([]))
    assert row["seeds"] == single["seeds"]
    np.testing.assert_allclose(row["errors"], single["errors"], atol=0.03)
