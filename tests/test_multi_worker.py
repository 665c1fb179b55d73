"""MultiWorkerMirroredStrategy with 2 worker processes on 127.0.0.1 (tests/multi_worker_main.py).

Every process is bounded: the test waits a fixed time, then SIGKILLs the whole process group
(a worker stuck in TF's C++ runtime ignores SIGTERM). Ports are free ports of 127.0.0.1 only.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
BOUND_S = 240  # no test process outlives this


def free_ports(count: int) -> list[int]:
    """Ports the kernel reports free on 127.0.0.1 (bound together, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Cluster:
    """Worker processes of one TF_CONFIG cluster, each with its own TMPDIR, stdout and stderr files."""

    def __init__(self, tmp_path, workers: int = 2):
        self.tmp_path = tmp_path
        self.addresses = [f"127.0.0.1:{port}" for port in free_ports(workers)]
        self.procs: dict[int, subprocess.Popen] = {}
        self.started = time.monotonic()

    def start(self, index: int, output_dir, *flags: str) -> None:
        scratch = self.tmp_path / f"tmp{index}"
        scratch.mkdir(exist_ok=True)
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": self.addresses}, "task": {"type": "worker", "index": index}}
        )
        env["TMPDIR"] = str(scratch)
        args = [sys.executable, os.path.join(TESTS, "multi_worker_main.py"), str(self.tmp_path / f"w{index}"), str(output_dir), *flags]
        self.procs[index] = subprocess.Popen(
            args,
            env=env,
            stdout=open(self.tmp_path / f"w{index}.out", "w"),
            stderr=open(self.tmp_path / f"w{index}.err", "w"),
            start_new_session=True,
        )

    def wait(self, index: int) -> tuple[int, float]:
        """(exit code, seconds since the cluster started); SIGKILL at the bound."""
        left = BOUND_S - (time.monotonic() - self.started)
        try:
            code = self.procs[index].wait(timeout=max(left, 1))
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.procs[index].wait()
        return code, time.monotonic() - self.started

    def kill(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)

    def stderr(self, index: int) -> str:
        return (self.tmp_path / f"w{index}.err").read_text()

    def report(self, index: int) -> dict:
        return json.loads((self.tmp_path / f"w{index}.json").read_text())

    def arrays(self, index: int):
        return np.load(self.tmp_path / f"w{index}.npz")


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.kill()


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("multi_worker_main: error:")]


@pytest.mark.slow
def test_two_workers_two_rounds(cluster, tmp_path):
    chief_dir, worker_dir = tmp_path / "run", tmp_path / "run_seen_by_worker1"
    cluster.start(0, chief_dir)
    cluster.start(1, worker_dir)  # a different path: a non-chief must never create or write it
    codes = [cluster.wait(0), cluster.wait(1)]
    assert [c for c, _ in codes] == [0, 0], cluster.stderr(0)[-2000:] + cluster.stderr(1)[-2000:]
    chief, worker = cluster.report(0), cluster.report(1)
    assert (chief["is_chief"], worker["is_chief"]) == (True, False)
    assert chief["num_workers"] == worker["num_workers"] == 2 and chief["replicas"] == 2

    # Both workers compute the same masks and end with the same weights, bit for bit.
    a, b = cluster.arrays(0), cluster.arrays(1)
    assert sorted(a.files) == sorted(b.files) and any(k.startswith("round1/") for k in a.files)
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    def results(report):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in report["rounds"]]

    assert results(chief) == results(worker)
    assert [r["weights_remaining"] for r in chief["rounds"]][0] == 1.0
    assert chief["rounds"][1]["weights_remaining"] < 0.85
    # Pruned weights stayed exactly 0 after every one of the 80 steps, on both workers.
    assert chief["steps"] == worker["steps"] == 80
    assert chief["pruned_nonzero"] == worker["pruned_nonzero"] == 0

    # Only the chief writes the run directory; worker 1 wrote a scratch copy in its TMPDIR, then removed it.
    summary = json.loads((chief_dir / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
    assert summary["rounds"][1]["test_accuracy"] == chief["rounds"][1]["test_accuracy"]
    assert (chief_dir / "round_01" / "masks.npz").exists() and (chief_dir / "round_00" / "checkpoint").is_dir()
    assert not worker_dir.exists()
    assert chief["scratch_configs"] == []
    assert len(worker["scratch_configs"]) == 1 and worker["scratch_configs"][0].startswith(str(tmp_path / "tmp1"))
    assert not any(name.startswith("tf_lottery_") for name in os.listdir(tmp_path / "tmp1"))
    assert worker["output_dir"] == str(worker_dir)

    # Evaluation is exact: every accuracy is a whole number of the 1,001 test examples.
    for r in chief["rounds"]:
        assert r["test_accuracy"] * 1001 == pytest.approx(round(r["test_accuracy"] * 1001), abs=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("victim", [1, 0])
def test_a_dead_worker_fails_the_run_clearly(cluster, tmp_path, victim):
    survivor = 1 - victim
    for index in (0, 1):
        # The victim SIGKILLs itself at step 5, like a machine lost mid-run.
        cluster.start(index, tmp_path / "run", *(["--die_at_step=5"] if index == victim else []))
    code_victim, _ = cluster.wait(victim)
    code, seconds = cluster.wait(survivor)
    assert code_victim == -signal.SIGKILL
    assert code == 1, cluster.stderr(survivor)[-3000:]
    assert seconds < 150  # TF's heartbeat (10 s) or the broken connection, not worker_timeout (60 s)
    errors = error_lines(cluster.stderr(survivor))
    assert len(errors) == 1, cluster.stderr(survivor)[-3000:]
    assert f"lost contact with worker {victim}" in errors[0]
    assert "a worker died, hung or is unreachable" in errors[0]
    assert "Traceback" not in cluster.stderr(survivor)


@pytest.mark.slow
def test_a_worker_that_never_comes_times_out(cluster, tmp_path):
    cluster.start(0, tmp_path / "run", "--worker_timeout=5")
    code, seconds = cluster.wait(0)
    assert code == 1, cluster.stderr(0)[-3000:]
    assert seconds < 90
    errors = error_lines(cluster.stderr(0))
    assert len(errors) == 1
    assert "the workers of the cluster did not all connect within 5 s (this is worker 0" in errors[0]
    assert not (tmp_path / "run").exists()
