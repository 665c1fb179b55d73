"""Dense vs sparse SavedModel exports of real tickets: size on disk and serving latency, side by side.

Trains short real runs (Lenet-300-100 with fc pruning rate 0.55 over 6 rounds: about 80%, 91%,
96% and 98% sparsity; Conv-2 at about 84%) on a Fashion-MNIST slice, exports each round both
ways, and times `loaded.signatures['serving_default']` at batch 1 and 256, alternating dense
and sparse blocks so that load from other processes hits both alike (median of the blocks).

  python benchmarks/export_latency.py [--work_dir=/tmp/export_bench] [--blocks=7]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time

import tf_lottery  # noqa: F401  (before TensorFlow: tf-keras)
import numpy as np
import tensorflow as tf

from tf_lottery.data import datasets as data
from tf_lottery import export as E


def make_run(out: str, model: str, rounds: int, rate: float, iterations: int, splits) -> str:
    if os.path.exists(os.path.join(out, "summary.json")):
        return out
    cfg = tf_lottery.from_preset(model, "fast")
    cfg = dataclasses.replace(
        cfg,
        training=dataclasses.replace(cfg.training, iterations=iterations, eval_every=iterations, checkpoint_every=0),
        pruning=dataclasses.replace(cfg.pruning, rounds=rounds, fc_rate=rate, conv_rate=rate),
    )
    tf_lottery.find_ticket(config=cfg, splits=splits, output_dir=out, log=lambda line: None)
    return out


def per_call_us(fn, x, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn(x)
    return (time.perf_counter() - start) / calls * 1e6


def compare(fns: dict, x, calls: int, blocks: int) -> dict:
    """Median per-call microseconds of each function, measured in alternating blocks."""
    for fn in fns.values():
        per_call_us(fn, x, 10)
    samples = {name: [] for name in fns}
    for _ in range(blocks):
        for name, fn in fns.items():
            samples[name].append(per_call_us(fn, x, calls))
    return {name: statistics.median(s) for name, s in samples.items()}


def signature_of(path: str):
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures[E.SIGNATURE]
    return loaded, lambda x: signature(images=x)


def overhead_export(path: str, input_shape) -> str:
    """A SavedModel whose signature does almost nothing: the fixed cost of one signature call."""
    module = tf.Module()
    spec = tf.TensorSpec([None, *input_shape], tf.float32, name=E.INPUT_NAME)
    module.serve = tf.function(lambda images: {"logits": tf.reduce_sum(images, axis=[1, 2, 3])}, input_signature=[spec])
    tf.saved_model.save(module, path, signatures={E.SIGNATURE: module.serve})
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", default=os.path.join(tempfile.gettempdir(), "export_bench"))
    parser.add_argument("--blocks", type=int, default=7)
    args = parser.parse_args()
    full = data.load("fashion_mnist", validation_size=500)
    splits = dataclasses.replace(
        full,
        train_images=full.train_images[:2000],
        train_labels=full.train_labels[:2000],
        test_images=full.test_images[:500],
        test_labels=full.test_labels[:500],
    )
    images = full.test_images[:256].astype(np.float32) / 255.0
    lenet = make_run(os.path.join(args.work_dir, "lenet"), "lenet_300_100", 6, 0.55, 40, splits)
    conv = make_run(os.path.join(args.work_dir, "conv2"), "conv2", 3, 0.6, 20, splits)
    base = os.path.join(args.work_dir, "serving")
    cases = [("lenet_300_100", lenet, r) for r in (2, 3, 4, 5)] + [("conv2", conv, 2)]

    x1, x256 = tf.constant(images[:1]), tf.constant(images[:256])
    _, empty = signature_of(overhead_export(os.path.join(args.work_dir, "overhead"), images.shape[1:]))
    print(f"TF {tf.__version__}, {os.cpu_count()} CPUs; median of {args.blocks} alternating blocks")
    header = (
        f"{'model':14s} {'sparsity':>8s} | {'dense B':>10s} {'sparse B':>10s} {'ratio':>6s} | "
        f"{'b1 dense us':>11s} {'b1 sparse':>9s} {'ratio':>6s} | {'b256 dense us':>13s} {'b256 sparse':>11s} {'ratio':>6s}"
    )
    print(header)
    for model, run_dir, round_index in cases:
        dense = E.export_ticket(run_dir, os.path.join(base, model), round=round_index, format="dense", images=images)
        sparse = E.export_ticket(run_dir, os.path.join(base, model), round=round_index, format="sparse", images=images)
        sparsity = 1.0 - E.read_metadata(dense.path)["weights_remaining"]
        held = [signature_of(dense.path), signature_of(sparse.path)]
        fns = {"dense": held[0][1], "sparse": held[1][1]}
        b1 = compare(fns, x1, 200, args.blocks)
        b256 = compare(fns, x256, 20 if model == "lenet_300_100" else 3, args.blocks)
        if (model, round_index) == ("lenet_300_100", 5):
            lenet_98 = dense.path
        size_d, size_s = dense.verification.size_bytes, sparse.verification.size_bytes
        print(
            f"{model:14s} {100 * sparsity:7.1f}% | {size_d:10,d} {size_s:10,d} {size_s / size_d:6.3f} | "
            f"{b1['dense']:11.0f} {b1['sparse']:9.0f} {b1['sparse'] / b1['dense']:6.2f} | "
            f"{b256['dense']:13.0f} {b256['sparse']:11.0f} {b256['sparse'] / b256['dense']:6.2f}",
            flush=True,
        )
    loaded, sig = signature_of(lenet_98)
    overhead = compare({"empty signature": empty, "dense signature": sig, "dense serve()": loaded.serve}, x1, 200, args.blocks)
    print("batch-1 call cost (Lenet-300-100 at 98%, dense export): " + ", ".join(f"{k} {v:.0f} us" for k, v in overhead.items()))


if __name__ == "__main__":
    main()
