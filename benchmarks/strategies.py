"""Training steps per second of a wrapped Lenet-300-100 under default, mirrored and multi_worker strategies.

Each strategy runs in fresh processes (logical devices and clusters must be set before TF starts):
default on one device, mirrored on 2 logical CPU devices, multi_worker as 2 local processes on
127.0.0.1. The model, optimizer and input pipeline are tf_lottery's own (`wrap` with its
keep-pruned constraint, `training.make_optimizer`, `inputs.train_batches`); the batch size is global. Prints steps/s and the ratio to
default side by side, per batch size.

  python benchmarks/strategies.py --steps=300 --batch_sizes=60,600
"""

import json
import os
import socket
import subprocess
import sys
import time

from absl import app, flags

flags.DEFINE_integer("steps", 300, "Timed training steps per measurement (after a warm-up).")
flags.DEFINE_integer("warmup", 30, "Untimed steps first (tracing, thread pools).")
flags.DEFINE_list("batch_sizes", ["60", "600"], "Global batch sizes to measure.")
flags.DEFINE_list("strategies", ["default", "mirrored", "multi_worker"], "Strategies to compare.")
flags.DEFINE_integer("repeats", 2, "Measurements per cell; the best (least disturbed) is reported.")
flags.DEFINE_string("child", None, "Internal: run one measurement as this strategy and print JSON.")
FLAGS = flags.FLAGS


def measure(strategy_name: str, batch_size: int, steps: int, warmup: int) -> dict:
    """In this process: train `warmup` then `steps` steps under the strategy; return steps/s."""
    import tf_lottery  # noqa: F401
    import tensorflow as tf

    if strategy_name == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tf_lottery import config as C
    from tf_lottery.search import distribute, training
    from tf_lottery.data import inputs
    from tf_lottery.masking import pruning

    import tf_lottery_models as zoo
    from tf_lottery.data import datasets as data

    strategy = distribute.get_strategy(C.RuntimeConfig(strategy=strategy_name, worker_timeout=120))
    splits = data.load("fashion_mnist", source="local")
    train = inputs.train_batches(splits.train_images[:10000], splits.train_labels[:10000], batch_size, seed=0)
    if distribute.num_workers(strategy) > 1:
        train = distribute.shard_by_data(train)
    with strategy.scope():
        model = pruning.wrap(zoo.get_builder("lenet_300_100")((28, 28, 1), seed=0))
        config = C.TrainingConfig(batch_size=batch_size)
        training.default_objective(model, one_hot=False).compile(model, training.make_optimizer(config))
    model.fit(train, epochs=1, steps_per_epoch=warmup, verbose=0)
    started = time.perf_counter()
    model.fit(train, epochs=1, steps_per_epoch=steps, verbose=0)
    seconds = time.perf_counter() - started
    return {
        "strategy": strategy_name,
        "batch_size": batch_size,
        "replicas": strategy.num_replicas_in_sync,
        "steps_per_second": steps / seconds,
        "chief": distribute.is_chief(strategy),
    }


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_child(strategy_name: str, batch_size: int) -> dict:
    """One measurement in fresh processes (two for multi_worker); returns the chief's result."""
    args = [sys.executable, os.path.abspath(__file__), f"--child={strategy_name}", f"--batch_sizes={batch_size}",
            f"--steps={FLAGS.steps}", f"--warmup={FLAGS.warmup}"]
    workers = 2 if strategy_name == "multi_worker" else 1
    addresses = [f"127.0.0.1:{p}" for p in free_ports(workers)]
    procs = []
    for index in range(workers):
        env = dict(os.environ)
        if workers > 1:
            env["TF_CONFIG"] = json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
    results = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise RuntimeError(f"{strategy_name} at batch {batch_size} did not finish in 600 s")
        if proc.returncode != 0:
            raise RuntimeError(f"{strategy_name} at batch {batch_size} failed (exit {proc.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return next(r for r in results if r["chief"])


def main(argv):
    del argv
    if FLAGS.child:
        print(json.dumps(measure(FLAGS.child, int(FLAGS.batch_sizes[0]), FLAGS.steps, FLAGS.warmup)), flush=True)
        return 0
    print(f"cpus: {os.cpu_count()}  steps: {FLAGS.steps} (after {FLAGS.warmup} warm-up)  best of {FLAGS.repeats}")
    header = f"{'global batch':>12} | " + " | ".join(f"{name:>26}" for name in FLAGS.strategies)
    print(header)
    print("-" * len(header))
    for batch_size in (int(b) for b in FLAGS.batch_sizes):
        cells = {}
        for name in FLAGS.strategies:
            cells[name] = max(run_child(name, batch_size)["steps_per_second"] for _ in range(FLAGS.repeats))
        base = cells.get("default")
        row = []
        for name in FLAGS.strategies:
            ratio = f" ({cells[name] / base:.2f}x)" if base else ""
            row.append(f"{cells[name]:9.1f} steps/s{ratio:>8}")
        print(f"{batch_size:>12} | " + " | ".join(f"{c:>26}" for c in row), flush=True)
    return 0


if __name__ == "__main__":
    app.run(main)
