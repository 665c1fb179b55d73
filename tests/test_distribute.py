"""tf.distribute: the strategy factory, chief-only writes, lost-worker errors, and a mirrored IMP run.

The mirrored run needs 2 logical CPU devices, which must be configured before TensorFlow starts
its runtime, so it runs in a fresh process (tests/mirrored_main.py); the rest runs in-process.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

import tf_lottery  # noqa: F401  (tf-keras before TensorFlow)
import tensorflow as tf

from tf_lottery import config as C
from tf_lottery.search import distribute
from tf_lottery.search.run_directory import RunDirectory

TESTS = os.path.dirname(os.path.abspath(__file__))
PYTHON = sys.executable


class FakeMultiWorker(tf.distribute.MultiWorkerMirroredStrategy):
    """A MultiWorkerMirroredStrategy that only knows its place in a cluster (no server, no collectives)."""

    def __init__(self, cluster: dict, task_type: str, task_id: int):  # noqa: D107 (skips TF's constructor)
        self._resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id
        )

    @property
    def cluster_resolver(self):
        return self._resolver


TWO_WORKERS = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}


# -- the factory -------------------------------------------------------------------------------
def test_default_and_one_device():
    assert distribute.get_strategy(C.RuntimeConfig()) is tf.distribute.get_strategy()
    one = distribute.get_strategy(C.RuntimeConfig(strategy="one_device"))
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    assert one.num_replicas_in_sync == 1


def test_unknown_strategy_is_one_line():
    with pytest.raises(ValueError, match=r"unknown strategy 'nccl'; allowed: default, one_device, mirrored"):
        distribute.get_strategy(C.RuntimeConfig(strategy="nccl"))


def test_tpu_path_with_a_supplied_resolver(monkeypatch):
    """resolver -> connect_to_cluster -> initialize_tpu_system -> TPUStrategy, all with that resolver."""
    calls = []
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(tf.train.ClusterSpec({"worker": ["10.0.0.2:8470"]}))
    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster", lambda r: calls.append(("connect", r)))
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", lambda r: calls.append(("initialize", r)))

    class RecordingTPUStrategy:
        def __init__(self, r):
            calls.append(("TPUStrategy", r))

    monkeypatch.setattr(tf.distribute, "TPUStrategy", RecordingTPUStrategy)
    strategy = distribute.get_strategy(C.RuntimeConfig(strategy="tpu", tpu="ignored"), cluster_resolver=resolver)
    assert isinstance(strategy, RecordingTPUStrategy)
    assert calls == [("connect", resolver), ("initialize", resolver), ("TPUStrategy", resolver)]


def test_tpu_that_fails_to_initialize_is_one_line(monkeypatch):
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(tf.train.ClusterSpec({"worker": ["10.0.0.2:8470"]}))
    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster", lambda r: None)

    def fail(r):
        raise tf.errors.NotFoundError(None, None, "TPUs not found in the cluster.\nmore detail")

    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", fail)
    with pytest.raises(ValueError) as error:
        distribute.get_strategy(C.RuntimeConfig(strategy="tpu", tpu="grpc://10.0.0.2:8470"), cluster_resolver=resolver)
    assert "\n" not in str(error.value)
    assert "no TPU reachable for --tpu='grpc://10.0.0.2:8470' (TPUs not found in the cluster.)" in str(error.value)


def test_tpu_without_one_is_one_line_in_python(monkeypatch):
    for name in ("TPU_NAME", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", "TPU_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError) as error:
        distribute.get_strategy(C.RuntimeConfig(strategy="tpu"))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("strategy 'tpu' found no TPU (no --tpu given and no TPU_NAME set")
    assert "--tpu=grpc://<host>:8470" in message


def test_cli_tpu_without_one_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TPU_NAME", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", "TPU_CONFIG")}
    result = subprocess.run(
        [PYTHON, "-m", "tf_lottery.cli.find", "--strategy=tpu", f"--output_dir={tmp_path / 'run'}"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("lottery-find:")]
    assert len(errors) == 1 and errors[0].startswith("lottery-find: error: strategy 'tpu' found no TPU")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def closed_port() -> int:
    """A 127.0.0.1 port with nothing listening (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def silent_port():
    """A 127.0.0.1 port that accepts connections and never says anything."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []
    thread = threading.Thread(target=lambda: [accepted.append(server.accept()) for _ in range(8)], daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.close()
    for connection, _ in accepted:
        connection.close()


def no_cloud_tpu_env(monkeypatch):
    for name in ("TPU_NAME", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", "TPU_CONFIG", "GCE_METADATA_HOST", "GCE_METADATA_IP"):
        monkeypatch.delenv(name, raising=False)


def test_tpu_name_off_google_cloud_is_one_line(monkeypatch):
    """A TPU name is looked up through the GCE metadata server; off Cloud its name does not resolve."""
    no_cloud_tpu_env(monkeypatch)
    looked_up = []

    def no_dns(host, *args, **kwargs):  # as on a machine without Cloud DNS, and no packet leaves
        looked_up.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(ValueError) as error:
        distribute.get_strategy(C.RuntimeConfig(strategy="tpu", tpu="my-tpu"))
    assert looked_up == ["metadata.google.internal"]
    assert str(error.value) == (
        "strategy 'tpu' found no TPU (--tpu='my-tpu': the GCE metadata server that TPU names are looked up "
        "with is unreachable ([Errno -2] Name or service not known); TPU names work only on Google Cloud); "
        "pass --tpu=<TPU name>, --tpu=grpc://<host>:8470, or --tpu=local on a TPU VM"
    )


def test_tpu_name_lookup_that_never_answers_is_bounded(monkeypatch, silent_port):
    no_cloud_tpu_env(monkeypatch)
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{silent_port}")
    monkeypatch.setattr(distribute, "TPU_TIMEOUT_S", 1.0)
    start = time.monotonic()
    with pytest.raises(ValueError) as error:
        distribute.get_strategy(C.RuntimeConfig(strategy="tpu", tpu="my-tpu"))
    assert time.monotonic() - start < 10
    assert str(error.value).startswith(
        "strategy 'tpu' found no TPU (--tpu='my-tpu': looking the TPU up got no answer within 1 s); pass --tpu="
    )


def test_tpu_lookup_errors_of_any_kind_are_one_line(monkeypatch):
    class DefaultCredentialsError(Exception):  # what google.auth raises without credentials
        pass

    def fail(tpu=None):
        raise DefaultCredentialsError("Could not automatically determine credentials.\nSee https://...")

    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", fail)
    with pytest.raises(ValueError) as error:
        distribute.get_strategy(C.RuntimeConfig(strategy="tpu", tpu="my-tpu"))
    assert str(error.value).startswith(
        "strategy 'tpu' found no TPU (--tpu='my-tpu': Could not automatically determine credentials.); pass"
    )


def run_tpu_strategy(address: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess:
    """get_strategy(tpu=address) in a fresh process: a connection changes TF's global context for good."""
    script = (
        "import sys, tf_lottery; from tf_lottery import config; from tf_lottery.search import distribute; "
        f"distribute.TPU_TIMEOUT_S = {timeout_s}\n"
        "try:\n"
        f"    distribute.get_strategy(config.RuntimeConfig(strategy='tpu', tpu={address!r}))\n"
        "except ValueError as e:\n"
        "    sys.exit(f'error: {e}')\n"
    )
    return subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, timeout=150)


def test_tpu_address_with_nothing_listening_fails_at_once():
    port = closed_port()
    start = time.monotonic()
    result = run_tpu_strategy(f"grpc://127.0.0.1:{port}")
    assert time.monotonic() - start < 60
    assert result.stderr.splitlines()[-1] == (
        f"error: no TPU reachable for --tpu='grpc://127.0.0.1:{port}' (cannot connect to 127.0.0.1:{port}: "
        "[Errno 111] Connection refused); pass --tpu=<TPU name>, --tpu=grpc://<host>:8470, or --tpu=local on a TPU VM"
    )


def test_tpu_address_that_speaks_no_grpc_is_bounded(silent_port):
    result = run_tpu_strategy(f"grpc://127.0.0.1:{silent_port}", timeout_s=2)
    assert result.stderr.splitlines()[-1] == (
        f"error: no TPU reachable for --tpu='grpc://127.0.0.1:{silent_port}' (127.0.0.1:{silent_port} accepts "
        "connections but no gRPC server answered within 2 s); pass --tpu=<TPU name>, --tpu=grpc://<host>:8470, "
        "or --tpu=local on a TPU VM"
    )


def test_tpu_address_of_a_tensorflow_server_without_tpus(tmp_path):
    """A real TF gRPC server on 127.0.0.1 passes the probe; initialize_tpu_system then finds no TPU."""
    port = closed_port()
    server = subprocess.Popen(
        [PYTHON, "-c", "import sys, tensorflow as tf; tf.distribute.Server(tf.train.ClusterSpec("
         f"{{'worker': ['127.0.0.1:{port}']}}), job_name='worker', task_index=0).join()"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        result = run_tpu_strategy(f"grpc://127.0.0.1:{port}", timeout_s=60)
    finally:
        server.kill()
        server.wait()
    assert result.stderr.splitlines()[-1].startswith(
        f"error: no TPU reachable for --tpu='grpc://127.0.0.1:{port}' (TPUs not found in the cluster."
    )


def test_cli_tpu_name_off_google_cloud_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TPU_NAME", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", "TPU_CONFIG")}
    env["GCE_METADATA_HOST"] = f"127.0.0.1:{closed_port()}"  # the metadata lookup stays on this machine
    result = subprocess.run(
        [PYTHON, "-m", "tf_lottery.cli.find", "--strategy=tpu", "--tpu=my-tpu", f"--output_dir={tmp_path / 'run'}"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("lottery-find:")]
    assert len(errors) == 1 and errors[0].startswith(
        "lottery-find: error: strategy 'tpu' found no TPU (--tpu='my-tpu': the GCE metadata server that TPU "
        "names are looked up with is unreachable ([Errno 111] Connection refused)"
    )
    assert not (tmp_path / "run").exists()


def test_multi_worker_path_with_a_supplied_resolver(monkeypatch):
    """The resolver and a collective timeout of worker_timeout seconds reach the strategy; start-up is bounded."""
    made, bounded = [], []
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(TWO_WORKERS), task_type="worker", task_id=1
    )

    class RecordingMWMS:
        def __init__(self, cluster_resolver, communication_options):
            made.append((cluster_resolver, communication_options))

    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", RecordingMWMS)
    monkeypatch.setattr(distribute, "_bound_startup", lambda cluster, timeout: bounded.append((cluster, timeout)))
    strategy = distribute.get_strategy(
        C.RuntimeConfig(strategy="multi_worker", worker_timeout=42.0), cluster_resolver=resolver
    )
    assert isinstance(strategy, RecordingMWMS)
    assert made[0][0] is resolver and made[0][1].timeout_seconds == 42.0
    assert bounded == [(TWO_WORKERS, 42.0)]


def test_worker_timeout_is_validated():
    with pytest.raises(ValueError, match=r"worker_timeout=0 must be a number in \(0, 86400\]"):
        C.RuntimeConfig(worker_timeout=0)


# -- where a worker stands, and what it writes ---------------------------------------------------
@pytest.mark.parametrize(
    "cluster, task_type, task_id, chief",
    [
        (TWO_WORKERS, "worker", 0, True),
        (TWO_WORKERS, "worker", 1, False),
        ({"chief": ["127.0.0.1:3"], "worker": ["127.0.0.1:1"]}, "worker", 0, False),
        ({"chief": ["127.0.0.1:3"], "worker": ["127.0.0.1:1"]}, "chief", 0, True),
    ],
)
def test_chief_and_worker_count(cluster, task_type, task_id, chief):
    strategy = FakeMultiWorker(cluster, task_type, task_id)
    assert distribute.is_chief(strategy) is chief
    assert distribute.num_workers(strategy) == 2
    assert distribute.task_name(strategy) == f"{task_type} {task_id}"


def test_single_process_strategies_are_chief():
    for strategy in (tf.distribute.get_strategy(), tf.distribute.OneDeviceStrategy("/cpu:0")):
        assert distribute.is_chief(strategy) and distribute.num_workers(strategy) == 1


def test_chief_writes_the_output_dir(tmp_path):
    with distribute.run_directory(str(tmp_path / "run"), FakeMultiWorker(TWO_WORKERS, "worker", 0)) as run:
        assert run.path == str(tmp_path / "run")


def test_non_chief_writes_a_temporary_copy_and_removes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    chief_dir = tmp_path / "run"
    config = C.ExperimentConfig()
    chief = RunDirectory(str(chief_dir))
    chief.create({"version": C.CONFIG_VERSION, "config": config.to_dict(), "fingerprint": config.fingerprint()})
    chief.unlock()
    (chief_dir / "initial.npz").write_bytes(b"theta_0")
    (chief_dir / "tensorboard").mkdir()
    before = sorted(os.listdir(chief_dir))
    with distribute.run_directory(str(chief_dir), FakeMultiWorker(TWO_WORKERS, "worker", 1)) as run:
        assert run.path.startswith(str(tmp_path / "scratch"))
        # It resumes from the chief's state (config and arrays), without the chief's tensorboard logs.
        assert run.exists() and run.read_record()["fingerprint"] == config.fingerprint()
        assert sorted(os.listdir(run.path)) == [".lock", "config.json", "initial.npz"]
        run.save_weights("rewind.npz", [])
    assert sorted(os.listdir(chief_dir)) == before
    assert os.listdir(tmp_path / "scratch") == []


def test_lost_peer_becomes_one_line(tmp_path):
    strategy = FakeMultiWorker(TWO_WORKERS, "worker", 0)
    text = (
        "Graph execution error:\n\nDetected at node CollectiveReduceV2\nCollective ops is aborted by: Error reported "
        "from /job:worker/task:1: The following tasks are unhealthy (stopped sending heartbeats):\n"
        "/job:worker/replica:0/task:1\nThe tasks have crashed."
    )
    with pytest.raises(distribute.WorkerLostError) as error:
        with distribute.peer_failures(strategy, str(tmp_path)):
            raise tf.errors.UnavailableError(None, None, text)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("lost contact with worker 1 (it stopped sending heartbeats): a worker died")
    assert f"rerun every worker with the same command to resume {tmp_path}" in message


def test_peer_errors_pass_through_a_single_process():
    with pytest.raises(tf.errors.UnavailableError):
        with distribute.peer_failures(tf.distribute.get_strategy()):
            raise tf.errors.UnavailableError(None, None, "a local input pipeline error")


def test_global_batch_must_cover_the_replicas():
    class FourReplicas:
        num_replicas_in_sync = 4

    distribute.check_batch_size(4, FourReplicas())
    with pytest.raises(ValueError, match=r"batch_size=3 is the global batch and smaller than the 4 replicas"):
        distribute.check_batch_size(3, FourReplicas())


# -- a real mirrored run -----------------------------------------------------------------------------
# Tolerances against a single-device run with the same seed and global batch: the mirrored gradient
# is the sum of two half-batch means (and oneDNN tiles 30-row matmuls differently from 60-row ones),
# so float32 rounding differs at ~1e-7 per step; over 40 Adam steps that stays far below what flips
# more than a handful of predictions. Allowed: 0.5 points of accuracy (5 of 1,001 test examples),
# 1e-3 relative on losses, 99.9% identical mask entries. Measured here: identical accuracies and
# masks, losses within 1e-6.
ACCURACY_TOLERANCE = 0.005
LOSS_TOLERANCE = 1e-3


@pytest.mark.slow
def test_mirrored_two_logical_devices_two_rounds(tmp_path):
    out = tmp_path / "report.json"
    result = subprocess.run(
        [PYTHON, os.path.join(TESTS, "mirrored_main.py"), str(out), str(tmp_path)],
        capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())

    # Masks, kernels and biases are mirrored over both devices.
    assert report["replicas"] == 2
    assert report["replicas_of"] == {"kernel": 2, "mask": 2, "bias": 2}
    assert set(report["variable_types"].values()) == {"MirroredVariable"}
    # After every reset and every step of all 4 stages (2 mains, 2 controls) replicas agree bit for bit
    # and pruned weights are exactly 0 on every replica.
    assert report["failures"] == []
    assert report["resets_checked"] == 4 and report["steps_checked"] == 4 * 40
    assert report["final_replicas_agree"] and report["final_is_rewind"]

    # Evaluation under the strategy equals a plain single-device evaluation of the same weights,
    # on 1,001 test examples (a last batch of 1): nothing dropped, nothing counted twice.
    assert report["distributed_eval"]["accuracy"] == report["reference_eval"]["accuracy"]
    assert report["distributed_eval"]["loss"] == pytest.approx(report["reference_eval"]["loss"], rel=1e-6)
    n_test, n_validation = report["test_examples"], report["validation_examples"]
    for history in report["mirrored_history"]:
        for evaluation in history:
            assert evaluation["test_accuracy"] * n_test == pytest.approx(round(evaluation["test_accuracy"] * n_test), abs=1e-3)
            correct = evaluation["validation_accuracy"] * n_validation
            assert correct == pytest.approx(round(correct), abs=1e-3)

    # A rerun resumes: every stage comes back from the run directory unchanged.
    assert report["rerun_rounds"] == report["mirrored_rounds"]

    # Close to one device with the same seed and global batch.
    mirrored, single = report["mirrored_rounds"], report["single_rounds"]
    assert [r["weights_remaining"] for r in mirrored] == [r["weights_remaining"] for r in single]
    for m, s in zip(mirrored, single):
        assert m["early_stop_iteration"] == s["early_stop_iteration"]
        for key in ("test_accuracy", "early_stop_test_accuracy"):
            assert abs(m[key] - s[key]) <= ACCURACY_TOLERANCE, (key, m[key], s[key])
        for key in ("validation_loss", "early_stop_validation_loss"):
            assert m[key] == pytest.approx(s[key], rel=LOSS_TOLERANCE)
        for control, metrics in m["controls"].items():
            assert abs(metrics["test_accuracy"] - s["controls"][control]["test_accuracy"]) <= ACCURACY_TOLERANCE
    assert set(mirrored[1]["controls"]) == {"random_reinit", "random_prune"}
    assert min(report["mask_agreement"]) >= 0.999
