"""Every export kind of the same tickets, measured side by side the way a deployment meets them.

For each search given (a granularity's run, or a folder of its replicates: the first seed's tickets
are exported, every seed's accuracy is recorded), each round is exported as the kinds that can serve
it (weight: dense, sparse, compact; unit: compact; block: sparse, compact and TFLite; every kind
verified against the ticket on 512 test images as `lottery-export` does), loaded in this one process
with `tf.saved_model.load`, and timed through its `serving_default` signature at batch 1 and batch
256: all exports interleaved, `--blocks` blocks of `--calls` calls each, the median block per call.
TFLite files run in `tf.lite.Interpreter` (its signature runner), interleaved the same way. Size is
the version directory on disk (TFLite: the file); peak memory is the growth of a fresh process's
resident set (VmRSS) from loading the export and answering one batch of 256 (`--memory`).

  python benchmarks/serving_latency.py --runs=weight=RUNS/weight,unit=RUNS/unit,block=RUNS/block \
      --out=reports/serving/lenet/data/serving.json [--rounds=0,4,8] [--blocks=9] [--calls=200] [--memory]

The JSON is what `lottery-report --serving=FILE` draws: accuracy against latency and size.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import tf_lottery  # noqa: F401  (before TensorFlow: tf-keras)
import numpy as np
import tensorflow as tf

from tf_lottery import export as E
from tf_lottery.export import saved_model

KINDS = {"weight": ("dense", "sparse", "compact"), "unit": ("compact",), "block": ("sparse", "compact"),
         "m_by_n": ("dense", "sparse")}
# Granularities whose rounds are also measured as TFLite files, and the SavedModel each is converted
# from: the dense export (zeros in place: the converter may encode a block ticket's 1x4 sparsity) or
# the compact one (a unit ticket as the smaller dense network). Round 0 is always the dense network.
TFLITE = {"block": "dense", "weight": "dense", "unit": "compact"}
BATCHES = (1, 256)

_MEMORY = r"""
import sys
import numpy as np
import tensorflow as tf

def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

tf.constant(1.0) + 1.0
before = rss()
path, shape = sys.argv[1], [int(d) for d in sys.argv[2].split(",")]
x = np.random.default_rng(0).random((256, *shape), dtype=np.float32)
if path.endswith(".tflite"):
    runner = tf.lite.Interpreter(model_path=path).get_signature_runner("serving_default")
    runner(images=x)
else:
    fn = tf.saved_model.load(path).signatures["serving_default"]
    fn(images=tf.constant(x))
print((rss() - before) / 1024.0)
"""


def _searches(spec: str) -> dict[str, list[str]]:
    """label -> its run directories (a replicate folder gives its seed_* runs, in seed order).

    A label is the search's name in the record and the report: its granularity, or any other name
    (e.g. two unit searches at different rates); the kinds exported follow the run's own granularity.
    """
    out = {}
    for item in spec.split(","):
        name, _, path = item.partition("=")
        if not name or not path or not os.path.isdir(path) or name in out:
            sys.exit(f"serving_latency.py: error: --runs item {item!r} must be label=<run or replicate folder>, "
                     "each label once")
        seeds = sorted((d for d in os.listdir(path) if d.startswith("seed_")), key=lambda d: int(d.split("_")[1]))
        out[name] = [os.path.join(path, d) for d in seeds] if seeds else [path]
    return out


def _granularity(run: str) -> str:
    """The granularity the run was pruned at (config.json), which decides the kinds it is exported as."""
    with open(os.path.join(run, "config.json")) as f:
        return json.load(f)["config"]["pruning"].get("granularity", "weight")


def _summary(run: str) -> list[dict]:
    with open(os.path.join(run, "summary.json")) as f:
        return json.load(f)["rounds"]


def _accuracy(runs: list[str], round_index: int) -> dict:
    """Early-stop test accuracy of the ticket and of its random re-initialization, per seed."""
    rows = [_summary(r)[round_index] for r in runs if len(_summary(r)) > round_index]
    return {
        "seeds": len(rows),
        "weights_remaining": rows[0]["weights_remaining"],
        "accuracy": [r["early_stop_test_accuracy"] for r in rows],
        "reinit_accuracy": [r["controls"]["random_reinit"]["early_stop_test_accuracy"] for r in rows
                            if "random_reinit" in r.get("controls", {})],
    }


def _export(run: str, round_index: int, kind: str, base: str):
    if os.path.isdir(os.path.join(base, "1")):
        return os.path.join(base, "1"), E.read_metadata(os.path.join(base, "1"))
    try:
        result = E.export_ticket(run, base, round=round_index, format=kind)
    except E.VerificationFailed as e:  # refused, as lottery-export refuses it: nothing to measure
        print(f"round {round_index} {kind}: {e.verification.problem()}", file=sys.stderr)
        return None, None
    return result.path, E.read_metadata(result.path)


def _tflite(path: str, out: str) -> str:
    if not os.path.exists(out):
        content = saved_model.tflite_bytes(path)
        with open(out, "wb") as f:
            f.write(content)
    return out


def _callable(path: str, batch_input):
    if path.endswith(".tflite"):
        interpreter = tf.lite.Interpreter(model_path=path)
        runner = interpreter.get_signature_runner("serving_default")
        return lambda: runner(images=batch_input)
    fn = tf.saved_model.load(path).signatures["serving_default"]
    tensor = tf.constant(batch_input)
    return lambda: fn(images=tensor)


def _time(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def _measure(entries: list[dict], input_shape: tuple, blocks: int, calls: int) -> None:
    """Median per-call microseconds of every entry at each batch size, all interleaved block by block."""
    rng = np.random.default_rng(0)
    for batch in BATCHES:
        x = rng.random((batch, *input_shape), dtype=np.float32)
        fns = [_callable(entry["path"], x) for entry in entries]  # TFLite: a new interpreter per batch size
        n = calls if batch == 1 else max(10, calls // 10)
        for fn in fns:
            _time(fn, 5)
        samples = [[] for _ in entries]
        for _ in range(blocks):
            for i, fn in enumerate(fns):
                samples[i].append(_time(fn, n))
        for entry, s in zip(entries, samples):
            entry[f"b{batch}_us"] = statistics.median(s)
            entry[f"b{batch}_spread_us"] = [min(s), max(s)]


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return E.directory_bytes(path, exclude=("model.tflite",))


def _memory(path: str, input_shape: tuple) -> float:
    result = subprocess.run([sys.executable, "-c", _MEMORY, path, ",".join(map(str, input_shape))],
                            capture_output=True, text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if result.returncode:
        raise RuntimeError(result.stderr[-2000:])
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", required=True, help="granularity=<run or replicate folder>, comma-separated")
    parser.add_argument("--out", required=True, help="the JSON file of every measurement")
    parser.add_argument("--work_dir", default="/tmp/serving_latency", help="where the exports are written")
    parser.add_argument("--rounds", default="", help="rounds to export (default: every round)")
    parser.add_argument("--blocks", type=int, default=9)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--memory", action="store_true", help="also measure each export's memory (a process each)")
    parser.add_argument("--memory_rounds", default="", help="with --memory: only these rounds (default: every round)")
    args = parser.parse_args()

    searches = _searches(args.runs)
    entries, input_shape, refused = [], None, []
    for label, runs in searches.items():
        granularity = _granularity(runs[0])
        rounds = range(len(_summary(runs[0])))
        if args.rounds:
            rounds = [r for r in map(int, args.rounds.split(",")) if r < len(_summary(runs[0]))]
        dense_accuracy = _accuracy(runs, 0)["accuracy"]  # what this search's tickets are held against
        for r in rounds:
            accuracy = _accuracy(runs, r)
            if r > 0:
                accuracy["dense_accuracy"] = dense_accuracy
            kinds = ("dense",) if r == 0 else KINDS[granularity]
            for kind in kinds:
                base = os.path.join(args.work_dir, label, f"round_{r:02d}", kind)
                path, meta = _export(runs[0], r, kind, base)
                if path is None:
                    refused.append({"granularity": label, "round": r, "kind": kind})
                    continue
                input_shape = tuple(meta["input_shape"])
                shapes = {n: layer["shape"] for n, layer in meta["layers"].items()}
                entries.append({"granularity": label, "round": r, "kind": kind, "path": path,
                                "size_bytes": _size(path), "kernel_shapes": shapes, **accuracy})
            if granularity in TFLITE:  # round 0 too: the dense TFLite file is what TFLite exports compare with
                source = "dense" if r == 0 else TFLITE[granularity]
                source_base = os.path.join(args.work_dir, label, f"round_{r:02d}", source)
                path, _ = _export(runs[0], r, source, source_base)
                if path is None:
                    continue  # its SavedModel was refused by verification: recorded above
                tfl = _tflite(path, os.path.join(args.work_dir, label, f"round_{r:02d}", "model.tflite"))
                entries.append({"granularity": label, "round": r, "kind": "tflite", "path": tfl,
                                "tflite_from": source, "size_bytes": _size(tfl), "tflite_sparse": saved_model.tflite_sparsity(tfl), **accuracy})
    # The dense network is the same for every search (same seeds, same theta_0, same training): one is
    # timed, the one of the search with the most seeds (ties: the first), placed first. Each ticket keeps
    # its own search's dense accuracies (dense_accuracy) to be held against.
    dense_rows = {}
    for e in entries:
        if e["round"] == 0 and (e["kind"] not in dense_rows or e["seeds"] > dense_rows[e["kind"]]["seeds"]):
            dense_rows[e["kind"]] = e
    entries = list(dense_rows.values()) + [e for e in entries if e["round"] > 0]
    _measure(entries, input_shape, args.blocks, args.calls)
    if args.memory:
        chosen = {int(r) for r in args.memory_rounds.split(",")} if args.memory_rounds else None
        for entry in entries:
            if chosen is None or entry["round"] in chosen:
                entry["peak_mb"] = _memory(entry["path"], input_shape)
    dense = next(e for e in entries if e["round"] == 0 and e["kind"] == "dense")
    dense_tflite = next((e for e in entries if e["round"] == 0 and e["kind"] == "tflite"), None)
    for entry in entries:
        reference = dense_tflite if entry["kind"] == "tflite" and dense_tflite else dense
        for b in BATCHES:  # TFLite files against the dense TFLite file (another runtime), the rest against dense
            entry[f"b{b}_vs_dense"] = entry[f"b{b}_us"] / reference[f"b{b}_us"]
        entry["size_vs_dense"] = entry["size_bytes"] / reference["size_bytes"]
        entry["path"] = os.path.relpath(entry["path"], args.work_dir)
    record = {
        "command": "python benchmarks/serving_latency.py " + " ".join(sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.processor() or platform.platform()}",
        "tensorflow": tf.__version__,
        "load_average": os.getloadavg(),
        "blocks": args.blocks, "calls": args.calls,
        "runs": {g: runs for g, runs in searches.items()},
        "granularities": {g: _granularity(runs[0]) for g, runs in searches.items()},  # label -> its runs' granularity
        "entries": entries,
        "refused": refused,  # exports whose verification failed (outputs beyond the tolerance, or a pruned weight non-zero)
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    print(f"{'granularity':11} {'round':>5} {'kind':8} {'remaining':>9} {'acc':>6} {'size B':>11} "
          f"{'b1 us':>7} {'b1 x':>5} {'b256 us':>8} {'b256 x':>6}" + (" peak MB" if args.memory else ""))
    for e in entries:
        print(f"{e['granularity']:11} {e['round']:5d} {e['kind']:8} {100 * e['weights_remaining']:8.2f}% "
              f"{100 * statistics.mean(e['accuracy']):6.2f} {e['size_bytes']:11,d} {e['b1_us']:7.0f} "
              f"{e['b1_vs_dense']:5.2f} {e['b256_us']:8.0f} {e['b256_vs_dense']:6.2f}"
              + (f" {e['peak_mb']:7.1f}" if "peak_mb" in e else ""))


if __name__ == "__main__":
    main()
