"""What the instability tests share: the tiny real search they analyse (Lenet on 600 Fashion-MNIST
examples, 40 iterations a network, deterministic) and byte-and-mtime snapshots of a folder (to prove
that a rerun rewrites nothing)."""

import os

import tf_lottery
from tf_lottery import config as C

ITERATIONS = 40


def tiny_config(rounds=2, **fields):
    return C.override(tf_lottery.from_preset("lenet_300_100", "fast"), iterations=ITERATIONS, epochs=None,
                      eval_every=20, checkpoint_every=20, train_subset=600, validation_size=500, deterministic=True,
                      rounds=rounds, **fields)


def files_under(path):
    """relative path -> (bytes, mtime_ns) of every file under `path`."""
    out = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = (f.read(), os.stat(full).st_mtime_ns)
    return out
