"""What the export tests share: tiny real runs, lottery-export in-process and as a program, and
snapshots of directory trees (to prove that a refused export changed nothing)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys

import tf_lottery

from fashion_slices import fashion_slice

EXPORT = [sys.executable, "-m", "tf_lottery.cli.export"]


def make_run(out: str, model: str = "lenet_300_100", rounds: int = 2, rate: float = 0.7, iterations: int = 20,
             train: int = 600, source=None, granularity: str = "weight", test: int = 200):
    """A real run on a Fashion-MNIST slice (the zoo model, or `source`: the user's own); returns the Ticket."""
    splits = fashion_slice(train=train, validation=100, test=test)
    cfg = tf_lottery.from_preset(model, "fast")
    cfg = dataclasses.replace(
        cfg,
        training=dataclasses.replace(cfg.training, iterations=iterations, eval_every=iterations, checkpoint_every=0),
        pruning=dataclasses.replace(cfg.pruning, rounds=rounds, fc_rate=rate, conv_rate=rate, granularity=granularity),
    )
    return tf_lottery.find_ticket(source, config=cfg, splits=splits, output_dir=out, log=lambda line: None)


def tree(path) -> dict:
    """Every entry under `path` (and `path` itself): kind, and for files size and SHA-256. {} if absent."""
    path = str(path)
    if not os.path.lexists(path):
        return {}
    out = {}
    entries = [("", path)]
    for root, dirs, files in os.walk(path):
        entries += [(os.path.relpath(os.path.join(root, n), path), os.path.join(root, n)) for n in dirs + files]
    for rel, full in entries:
        if os.path.islink(full):
            out[rel] = ("link", os.readlink(full))
        elif os.path.isdir(full):
            out[rel] = ("dir", oct(os.stat(full).st_mode))
        else:
            with open(full, "rb") as f:
                out[rel] = ("file", os.path.getsize(full), hashlib.sha256(f.read()).hexdigest())
    return out


def cli(capfd, *args: str) -> tuple[int, str, list[str]]:
    """lottery-export run in this process: (exit code, stdout, stderr lines), read through pytest's capfd."""
    from cli_runner import run_main

    capfd.readouterr()
    code = run_main("export", *args)
    out, err = capfd.readouterr()
    return code, out, err.splitlines()


def program(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """lottery-export as its own process (TensorFlow's start-up included)."""
    env = dict(os.environ, TF_LOTTERY_OFFLINE="1")
    return subprocess.run(EXPORT + list(args), capture_output=True, text=True, timeout=timeout, env=env)
