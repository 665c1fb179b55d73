"""A tf.distribute strategy from its name, and what a ticket search needs to run inside one.

Names: default, one_device, mirrored, multi_worker, tpu. The whole search (wrapping, training,
mask computation, resets, controls, evaluation, checkpoints) runs under the strategy; the batch
size is global (split across replicas). Multi-worker runs add three things here: only the chief
writes the run directory (other workers write a private temporary copy, as TF's multi-worker
guide does), every wait on another worker is bounded by `RuntimeConfig.worker_timeout`, and a
lost worker surfaces as one `WorkerLostError` line instead of a hang or a traceback.

A TPU is found and reached within `TPU_TIMEOUT_S` seconds per step (looking a TPU name up on
Google Cloud, then a TCP connect and a gRPC handshake with its address), so a mistyped name or
address fails in one line instead of a traceback or a hang of minutes inside TensorFlow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import socket
import tempfile
import threading
import urllib.error
from typing import Iterator, Optional

import numpy as np
import tensorflow as tf

from tf_lottery.config import STRATEGIES, RuntimeConfig
from tf_lottery.data.inputs import Inputs
from tf_lottery.errors import UserError, first_line
from tf_lottery.search.run_directory import RunDirectory

# What TF raises when a peer dies, hangs past a collective timeout or never registers.
PEER_ERRORS = (
    tf.errors.UnavailableError,
    tf.errors.DeadlineExceededError,
    tf.errors.CancelledError,
    tf.errors.AbortedError,
)


# Seconds for each step of finding a TPU: the Cloud lookup of a name, the TCP connect, the gRPC
# handshake. A healthy TPU answers each in about a second; TF itself would wait for minutes.
TPU_TIMEOUT_S = 30.0
_TPU_HINT = "pass --tpu=<TPU name>, --tpu=grpc://<host>:8470, or --tpu=local on a TPU VM"


class WorkerLostError(UserError):
    """Another worker of a multi-worker run died, hung past `worker_timeout`, or never connected."""


def get_strategy(
    runtime: RuntimeConfig, cluster_resolver: Optional[tf.distribute.cluster_resolver.ClusterResolver] = None
) -> tf.distribute.Strategy:
    """Build the strategy the run asks for; `cluster_resolver` overrides TF_CONFIG or the TPU lookup.

    multi_worker and tpu must be built at program start, before any other TensorFlow op runs.
    """
    name = runtime.strategy
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(_mirrored_devices())
    if name == "multi_worker":
        return _multi_worker(runtime, cluster_resolver)
    if name == "tpu":
        return _tpu(runtime, cluster_resolver)
    raise ValueError(f"unknown strategy {name!r}; allowed: {', '.join(STRATEGIES)}")


def _mirrored_devices() -> Optional[list[str]]:
    """All GPUs; without GPUs, all logical CPU devices when the program configured several."""
    if tf.config.list_logical_devices("GPU"):
        return None  # TF's default: every visible GPU
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    return cpus if len(cpus) > 1 else None


def _multi_worker(runtime: RuntimeConfig, resolver) -> tf.distribute.Strategy:
    resolver = resolver or tf.distribute.cluster_resolver.TFConfigClusterResolver()
    timeout = float(runtime.worker_timeout)
    if timeout <= 0:
        raise ValueError(f"worker_timeout={runtime.worker_timeout!r} must be a positive number of seconds")
    cluster = resolver.cluster_spec().as_dict()
    if cluster:
        _bound_startup(cluster, timeout)
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver, communication_options=options)
    except PEER_ERRORS as e:
        raise WorkerLostError(
            f"the workers of the cluster did not all connect within {timeout:g} s (this is "
            f"{resolver.task_type} {resolver.task_id}; cluster {cluster}); start every task of TF_CONFIG "
            f"with the same command, or raise --worker_timeout"
        ) from e


def _bound_startup(cluster: dict, timeout: float) -> None:
    """Configure TF's coordination service so that start-up fails after `timeout` instead of waiting forever.

    MultiWorkerMirroredStrategy configures the service itself (with no registration deadline) unless
    one is configured already; there is no public API for this, hence the eager context.
    """
    from tensorflow.python.eager import context

    ctx = context.context()
    if ctx.coordination_service is not None:
        return  # the program configured it already
    jobs = [job for job in ("chief", "worker") if job in cluster]
    if not jobs:
        return  # no training tasks: TF reports that itself
    ctx.configure_coordination_service(
        service_type="standalone",
        service_leader=f"/job:{jobs[0]}/replica:0/task:0",  # the chief, else worker 0, as TF picks
        cluster_register_timeout_in_ms=int(timeout * 1000),
    )
    config = ctx.coordination_service
    # Without the barrier the deadline applies only to reaching the leader, not to all tasks joining.
    config.cluster_register_with_barrier = True
    for job in jobs:
        config.coordinated_job_list.add(name=job, num_tasks=len(cluster[job]))


def _tpu(runtime: RuntimeConfig, resolver) -> tf.distribute.Strategy:
    given = f"--tpu={runtime.tpu!r}" if runtime.tpu else "no --tpu given and no TPU_NAME set"
    try:
        resolver, master = _within(TPU_TIMEOUT_S, _tpu_master, runtime.tpu, resolver)
    except Exception as e:  # the Cloud TPU client raises URLError, HttpError, credential errors, ...
        raise ValueError(f"strategy 'tpu' found no TPU ({given}: {_lookup_failure(e)}); {_TPU_HINT}") from e
    if master.startswith("grpc://"):
        address = master[len("grpc://"):]
        try:  # the thread bounds the DNS lookup of a host name too
            unreachable = _within(2 * TPU_TIMEOUT_S + 1, _unreachable_grpc, address, TPU_TIMEOUT_S)
        except TimeoutError:
            unreachable = f"no answer from {address} within {2 * TPU_TIMEOUT_S + 1:g} s"
        if unreachable:
            raise ValueError(f"no TPU reachable for --tpu={runtime.tpu!r} ({unreachable}); {_TPU_HINT}")
    try:
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, OSError, tf.errors.OpError) as e:
        raise ValueError(f"no TPU reachable for --tpu={runtime.tpu!r} ({first_line(e)}); {_TPU_HINT}") from e
    return tf.distribute.TPUStrategy(resolver)


def _tpu_master(tpu: Optional[str], resolver) -> tuple:
    """(resolver, its master address): for a TPU name both ask Google Cloud (metadata server, TPU API)."""
    resolver = resolver or tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    return resolver, resolver.master()


def _lookup_failure(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return f"looking the TPU up got no answer within {TPU_TIMEOUT_S:g} s"
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        return (
            f"the GCE metadata server that TPU names are looked up with is unreachable "
            f"({error.reason}); "
            f"TPU names work only on Google Cloud"
        )
    return first_line(error)


def _unreachable_grpc(address: str, timeout: float) -> Optional[str]:
    """Why no gRPC server answers at host:port within `timeout` seconds, or None.

    TF would retry for minutes; a TCP connect says at once that nothing listens, and a gRPC
    handshake that something listening is a gRPC server (not, say, an HTTP server).
    """
    import grpc  # a dependency of tensorflow

    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except ValueError:
        return f"{address} is not host:port"
    except OSError as e:
        return f"cannot connect to {address}: {first_line(e)}"
    channel = grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)])
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        return f"{address} accepts connections but no gRPC server answered within {timeout:g} s"
    finally:
        channel.close()
    return None


def _within(timeout: float, function, *args):
    """function(*args), or TimeoutError after `timeout` seconds (the call goes on in a daemon thread).

    For calls with no deadline of their own: urllib's metadata lookups and DNS wait indefinitely.
    """
    outcome = {}

    def call():
        try:
            outcome["value"] = function(*args)
        except BaseException as e:  # handed to the caller's thread below
            outcome["error"] = e

    thread = threading.Thread(target=call, name=f"tf_lottery {function.__name__}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"{function.__name__} did not return within {timeout:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# -- where a worker stands in the cluster -------------------------------------------------------
def _cluster(strategy: tf.distribute.Strategy) -> tuple[dict, Optional[str], Optional[int]]:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return {}, None, None  # TPUStrategy and the rest run from a single client
    return resolver.cluster_spec().as_dict(), resolver.task_type, resolver.task_id


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """How many processes run this search together (1 except for a multi-worker cluster)."""
    cluster, _, _ = _cluster(strategy)
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The chief (or worker 0 when the cluster has no chief) is the one process that writes results."""
    cluster, task_type, task_id = _cluster(strategy)
    if not cluster or task_type in (None, "chief"):
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def task_name(strategy: tf.distribute.Strategy) -> str:
    _, task_type, task_id = _cluster(strategy)
    return "this process" if task_type is None else f"{task_type} {task_id}"


@contextlib.contextmanager
def run_directory(output_dir: str, strategy: tf.distribute.Strategy) -> Iterator[RunDirectory]:
    """The chief's run directory, or for another worker a private temporary copy removed at the end.

    Every worker executes the same writes (checkpoint saves may be collective), but only the chief's
    land in `output_dir`. A resuming worker starts from a copy of `output_dir` as it finds it, so
    resuming a multi-machine run needs `output_dir` on a filesystem all workers see.
    """
    if is_chief(strategy):
        yield RunDirectory(output_dir)
        return
    scratch = tempfile.mkdtemp(prefix=f"tf_lottery_{task_name(strategy).replace(' ', '')}_")
    path = os.path.join(scratch, "run")
    try:
        if os.path.isfile(os.path.join(output_dir, "config.json")):
            shutil.copytree(output_dir, path, ignore=shutil.ignore_patterns("tensorboard", "*.tmp"))
        yield RunDirectory(path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def peer_failures(strategy: tf.distribute.Strategy, output_dir: Optional[str] = None) -> Iterator[None]:
    """Turn TF's errors about a lost peer into one WorkerLostError line (multi-worker runs only)."""
    try:
        yield
    except PEER_ERRORS as e:
        if num_workers(strategy) <= 1:
            raise
        resume = f"; rerun every worker with the same command to resume {output_dir}" if output_dir else ""
        raise WorkerLostError(
            f"lost contact with {_lost_peers(e, task_name(strategy))}: a worker died, hung or is unreachable "
            f"({task_name(strategy)} stops here){resume}"
        ) from e


def _lost_peers(error: BaseException, own: str) -> str:
    """'worker 1 (it stopped sending heartbeats)' from TF's multi-line error text, as far as it says."""
    text = getattr(error, "message", None) or str(error)
    peers = []
    for job, task in re.findall(r"/job:(\w+)(?:/replica:\d+)?/task:(\d+)", text):
        if f"{job} {task}" not in peers + [own]:
            peers.append(f"{job} {task}")
    why = type(error).__name__
    if "heartbeat" in text:
        why = "it stopped sending heartbeats"
    elif "Connection reset" in text or "Socket closed" in text or "failed to connect" in text.lower():
        why = "its connection was closed"
    elif isinstance(error, tf.errors.DeadlineExceededError):
        why = "a collective timed out"
    return f"{', '.join(peers) or 'another worker'} ({why})"


# -- data and checks -----------------------------------------------------------------------------
def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Every worker reads the same global batches and keeps its share: exact for any source.

    TF's AUTO policy looks for files first; our datasets are in-memory, so say DATA outright.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def check_batch_size(batch_size: int, strategy: tf.distribute.Strategy) -> None:
    """The batch size is global: it must give every replica at least one example."""
    replicas = strategy.num_replicas_in_sync
    if batch_size < replicas:
        raise ValueError(
            f"batch_size={batch_size} is the global batch and smaller than the {replicas} replicas of the "
            f"strategy; allowed: batch_size >= {replicas}"
        )


def for_strategy(inputs: Inputs, strategy, batch_size: Optional[int]) -> Inputs:
    """`inputs` as `strategy` reads them: the global `batch_size` checked against the replicas (None: the
    user's datasets are batched already), and each worker's share under several workers."""
    if batch_size is not None:
        check_batch_size(batch_size, strategy)
    return shard_for_workers(inputs) if num_workers(strategy) > 1 else inputs


def shard_for_workers(inputs: Inputs) -> Inputs:
    """Multi-worker: each worker reads the same global batches and keeps its share (exact evaluation)."""
    shard = shard_by_data
    return dataclasses.replace(
        inputs,
        train_from=lambda seed, start: shard(inputs.train_from(seed, start)),
        validation=shard(inputs.validation),
        test=shard(inputs.test),
    )


def replica_values(variable) -> list[np.ndarray]:
    """The value of a variable on each local replica, in device order (one value if not mirrored)."""
    return [np.asarray(v.numpy()) for v in getattr(variable, "values", (variable,))]
