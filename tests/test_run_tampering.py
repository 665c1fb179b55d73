"""The run directory under tampering, concurrent writers, full disks and bad files (issue: hardening).

Each case tampers with a copy of one finished run through a helper, reruns the same command, and
checks the exit code, exactly one stderr line, and that the run is unchanged byte for byte (or that
the documented repair happened). Runs are tiny (3 rounds of 40 iterations on 1,000 examples).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cli_runner import run_find

pytestmark = pytest.mark.integration

FIND = [sys.executable, "-m", "tf_lottery.cli.find"]
EXPORT = [sys.executable, "-m", "tf_lottery.cli.export"]
BASE = ["--model=lenet_300_100", "--dataset=fashion_mnist", "--rounds=3", "--iterations=40", "--eval_every=10",
        "--checkpoint_every=20", "--train_subset=1000", "--controls=random_reinit,random_prune", "--rewind_step=10",
        "--deterministic"]
ENV = dict(os.environ, TF_LOTTERY_OFFLINE="1")


class Result:
    """What a lottery-find run gave: exit code, stdout and stderr (like subprocess.CompletedProcess)."""

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def find(out, *flags):
    """lottery-find with BASE and `flags` on run `out`, in this process (a new process costs seconds)."""
    return Result(*run_find(*BASE, f"--output_dir={out}", "--quiet", *flags))


def find_process(out, *flags, timeout=600):
    return subprocess.run(FIND + BASE + [f"--output_dir={out}", "--quiet"] + list(flags),
                          capture_output=True, text=True, timeout=timeout, env=ENV)


def files_of(directory) -> dict:
    """Every file's bytes (the lock file holds the last writer's pid, so it is left out)."""
    out = {}
    for root, _, names in os.walk(directory):
        for name in names:
            if name == ".lock":
                continue
            path = os.path.join(root, name)
            if os.path.islink(path):
                out[os.path.relpath(path, directory)] = ("link", os.readlink(path))
                continue
            with open(path, "rb") as f:
                out[os.path.relpath(path, directory)] = f.read()
    return out


def one_error(result, program="lottery-find") -> str:
    assert result.returncode != 0, result.stdout[-500:]
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{program}: error:"), result.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    result = find(out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture
def run(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy, symlinks=True)
    return copy


# -- data loss --------------------------------------------------------------------------------------
def test_resume_removes_only_its_own_temporaries(run):
    shutil.copytree(run / "round_01", run / "round_01.old")
    (run / "notes.old").mkdir()
    (run / "notes.old" / "IMPORTANT.txt").write_text("x")
    (run / ".main.json.12345.tmp").write_text("a user's hidden file")
    ours = run / "round_02" / ".main.json.tflottery-999999-0123abcd.tmp"
    ours.write_text("half-written by a killed lottery-find")
    result = find(run)
    assert result.returncode == 0, result.stderr
    assert (run / "notes.old" / "IMPORTANT.txt").read_text() == "x"
    assert (run / "round_01.old" / "main.json").exists()
    assert (run / ".main.json.12345.tmp").exists()
    assert not ours.exists()


def test_a_link_inside_a_run_is_refused_and_nothing_outside_is_touched(run, tmp_path):
    shutil.rmtree(run / "round_02")
    victim = tmp_path / "V"
    (victim / "checkpoint").mkdir(parents=True)
    (victim / "checkpoint" / "PRECIOUS").write_text("p")
    os.symlink(victim, run / "round_02")
    before, outside = files_of(run), files_of(victim)
    line = one_error(find(run))
    assert "round_02 is a symbolic link" in line
    assert files_of(run) == before and files_of(victim) == outside


# -- silent wrong results -------------------------------------------------------------------------------
def test_a_recomputed_stage_keeps_every_later_round_in_the_summary(run, tmp_path):
    (run / "round_01" / "main.json").unlink()
    result = find(run)
    assert result.returncode == 0, result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2]
    assert len((run / "rounds.csv").read_text().splitlines()) == 4
    export = subprocess.run(EXPORT + [f"--run_dir={run}", "--round=last", f"--export_base={tmp_path / 'serving'}"],
                            capture_output=True, text=True, timeout=600, env=ENV)
    assert export.returncode == 0, export.stderr
    meta = json.loads((tmp_path / "serving" / "1" / "assets.extra" / "tf_lottery_export.json").read_text())
    assert meta["round"] == 2


@pytest.mark.parametrize("tamper", ["halved", "nan", "other_count", "revived"])
def test_mask_values_are_checked_when_read_back(run, tamper):
    path = run / "round_02" / "masks.npz"
    masks = dict(np.load(path))
    previous = dict(np.load(run / "round_01" / "masks.npz"))
    if tamper == "halved":
        masks["fc1"] = masks["fc1"] * 0.5
    elif tamper == "nan":
        masks["fc2"] = np.where(masks["fc2"] > 0, np.nan, 0.0).astype(np.float32)
    elif tamper == "other_count":
        masks["fc1"] = previous["fc1"]
    else:  # same count, but a weight pruned in round 1 comes back
        flat = masks["output"].reshape(-1).copy()
        flat[np.flatnonzero(previous["output"].reshape(-1) == 0)[0]] = 1
        flat[np.flatnonzero(flat)[-1]] = 0
        masks["output"] = flat.reshape(masks["output"].shape)
    np.savez(path, **masks)
    before = files_of(run)
    line = one_error(find(run))
    assert "round_02/masks.npz" in line
    assert files_of(run) == before


@pytest.mark.parametrize("iteration, why", [(-40, "outside 1..39"), (40, "outside 1..39"), (30, "holds iteration 20")])
def test_progress_state_is_checked_against_the_budget_and_its_checkpoint(run, iteration, why):
    progress = run / "in_progress"
    # An in-progress record for round 2's ticket at iteration 20, from a copy of a real checkpoint.
    state = {"round": 2, "stage": "main", "iteration": 20, "history": [], "seconds": 1.0}
    write_progress(run, progress, state)
    state["iteration"] = iteration
    if iteration > 20:
        state["history"].append(dict(state["history"][-1], iteration=iteration))
    (progress / "state.json").write_text(json.dumps(state))
    (run / "round_02" / "main.json").unlink()
    before = files_of(run)
    line = one_error(find(run))
    assert "in_progress" in line and why in line
    assert files_of(run) == before


def write_progress(run, progress, state):
    """A real mid-training checkpoint (model and optimizer at iteration 20) with its state.json."""
    import subprocess as sp

    code = (
        "import sys, json, tf_lottery, tf_keras as keras, tensorflow as tf\n"
        "from tf_lottery import config as C\n"
        "from tf_lottery.masking import pruning\n"
        "from tf_lottery.search import training\n"
        "import tf_lottery_models as zoo\n"
        "m = pruning.wrap(zoo.get_builder('lenet_300_100')((28, 28, 1), seed=0))\n"
        "training.default_objective(m, False).compile(m, training.make_optimizer(C.TrainingConfig()))\n"
        "m.optimizer.build(m.trainable_variables); m.optimizer.iterations.assign(20)\n"
        "tf.train.Checkpoint(model=m, optimizer=m.optimizer).write(sys.argv[1] + '/state')\n"
    )
    progress.mkdir()
    sp.run([sys.executable, "-c", code, str(progress)], check=True, capture_output=True, env=ENV, timeout=300)
    evaluation = {"iteration": 10, "train_loss": 1.0, "validation_loss": 1.0, "validation_accuracy": 0.5,
                  "test_loss": 1.0, "test_accuracy": 0.5}
    state["history"] = [evaluation, dict(evaluation, iteration=20)]
    (progress / "state.json").write_text(json.dumps(state))


def test_extending_a_run_with_other_data_is_refused(run, tmp_path):
    source = "/usr/share/datasets/fashion-mnist"
    data = tmp_path / "data"
    shutil.copytree(source, data)
    import gzip

    labels = bytearray(gzip.decompress((data / "train-labels-idx1-ubyte.gz").read_bytes()))
    labels[8 + 3] = (labels[8 + 3] + 1) % 10  # one training label differs
    (data / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(labels)))
    before = files_of(run)
    line = one_error(find(run, "--rounds=4", f"--data_dir={data}"))
    assert "trained on other data" in line
    assert files_of(run) == before
    same = find(run, f"--data_dir={source}")  # the same data from another path resumes
    assert same.returncode == 0, same.stderr


# -- one line instead of a traceback -------------------------------------------------------------
def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "live"
    first = subprocess.Popen(FIND + BASE + [f"--output_dir={out}", "--quiet", "--iterations=100000", "--eval_every=500"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.time() + 300
        while not (out / "round_00" / "masks.npz").exists() and time.time() < deadline:
            time.sleep(0.2)
        line = one_error(find(out, "--iterations=100000", "--eval_every=500"))
        assert f"pid {first.pid}" in line and "another process" in line
        first.send_signal(signal.SIGTERM)  # the first writer stops with its one line and can be resumed
        _, stderr = first.communicate(timeout=300)
        assert first.returncode == 143
        assert stderr.splitlines() == [f"lottery-find: interrupted; rerun the same command to resume {out}"]
    finally:
        if first.poll() is None:
            first.kill()


def test_a_missing_rewind_point_says_which_file_and_how_to_recover(run):
    (run / "rewind.npz").unlink()
    (run / "round_02" / "main.json").unlink()
    before = files_of(run)
    line = one_error(find(run))
    assert "rewind.npz" in line and "iteration 10 of round 0" in line and "round_00/main.json" in line
    assert files_of(run) == before


@pytest.mark.parametrize("part", ["data", "index"])
def test_a_truncated_checkpoint_is_one_line(run, part):
    directory = run / "round_01" / "checkpoint"
    name = next(n for n in os.listdir(directory) if (".data-" in n) == (part == "data") and n.startswith("ticket."))
    data = (directory / name).read_bytes()
    (directory / name).write_bytes(data[: len(data) // 2])
    before = files_of(run)
    line = one_error(find(run))
    assert "round_01/checkpoint" in line and "truncated or corrupted" in line
    assert files_of(run) == before


@pytest.mark.parametrize("file, content, needle", [
    ("config.json", {"config": []}, "config.json is not a tf_lottery run record"),
    ("round_01/main.json", {}, "is not a stage result"),
    ("round_01/main.json", "extra_history_key", "history entry with keys"),
    ("round_01/random_prune.json", {"history": 1}, "is not a stage result"),
])
def test_structurally_wrong_json_is_one_line(run, file, content, needle):
    path = run / file
    if content == "extra_history_key":
        result = json.loads(path.read_text())
        result["history"][0]["extra"] = 1
        content = result
    path.write_text(json.dumps(content))
    before = files_of(run)
    line = one_error(find(run))
    assert needle in line
    assert files_of(run) == before


def test_a_garbled_summary_is_rebuilt_from_the_round_files(run):
    summary = (run / "summary.json").read_text()
    (run / "summary.json").write_text("{}")
    result = find(run)
    assert result.returncode == 0, result.stderr
    assert (run / "summary.json").read_text() == summary


def test_a_full_disk_is_one_line_and_the_run_resumes(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        out = mount / "run"
        line = one_error(find(out))
        assert "No space left on device" in line and f"resume {out}" in line
        shutil.copytree(out, tmp_path / "moved", ignore=shutil.ignore_patterns("*.tmp"))
        result = find(tmp_path / "moved")  # the same command, with room, finishes the run
        assert result.returncode == 0, result.stderr
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_read_only_run_is_one_line(run):
    (run / "round_02" / "main.json").unlink()
    os.chmod(run, 0o555)
    for root, dirs, _ in os.walk(run):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o555)
    try:
        if os.access(run, os.W_OK):
            if subprocess.run(["chattr", "+i", str(run / "round_02")], capture_output=True).returncode:
                pytest.skip("cannot make a directory read-only for this user")
        line = one_error(find(run))
        assert "round_02" in line or "not writable" in line or "Read-only" in line or "Permission denied" in line
    finally:
        subprocess.run(["chattr", "-i", str(run / "round_02")], capture_output=True)
        for root, dirs, _ in os.walk(run):
            os.chmod(root, 0o755)
