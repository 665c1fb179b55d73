"""Resident memory across a long search and across many searches in one Python process.

Two measurements, each in a fresh Python process so that neither inherits the other's memory:
  search: one find_ticket of Lenet-300-100 on Fashion-MNIST with a tiny budget (20 iterations a
          round on 600 training images), 48 rounds; RSS and peak RSS (VmHWM) after every round.
  calls:  20 find_ticket calls of 2 rounds each (the same tiny budget), one after the other, as a
          notebook or a sweep makes them; RSS and peak RSS after each call.
Prints the figures RESULTS.md records: peak RSS after rounds 12 and 48, after calls 1 and 20, and
the growth per round (from round 12) and per call (from call 2) between them.

  python benchmarks/memory.py [--rounds=48] [--calls=20] [--json=out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

TINY = dict(iterations=20, train_subset=600, eval_every=10, validation_size=500, checkpoint_every=0)


def _memory_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB, from /proc/self/status."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024.0
    return values["VmRSS"], values["VmHWM"]


def _config(rounds: int):
    from tf_lottery import ExperimentConfig, config as config_lib

    return config_lib.override(ExperimentConfig(), rounds=rounds, deterministic=True, **TINY)


def measure_search(rounds: int) -> list[dict]:
    """Memory after each round of one search of `rounds` rounds."""
    import tf_lottery

    samples = []

    def log(line: str) -> None:
        if line.startswith("round "):
            rss, peak = _memory_mb()
            samples.append({"round": len(samples), "rss_mb": rss, "peak_mb": peak})

    with tempfile.TemporaryDirectory() as tmp:
        tf_lottery.find_ticket(config=_config(rounds), output_dir=os.path.join(tmp, "run"), log=log)
    return samples


def measure_calls(calls: int) -> list[dict]:
    """Memory after each of `calls` searches of 2 rounds in this process."""
    import tf_lottery

    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        for call in range(calls):
            tf_lottery.find_ticket(config=_config(2), output_dir=os.path.join(tmp, f"run_{call}"), log=lambda line: None)
            rss, peak = _memory_mb()
            samples.append({"call": call + 1, "rss_mb": rss, "peak_mb": peak})
    return samples


def _child(kind: str, count: int) -> list[dict]:
    """Run one measurement in a fresh Python process; its samples."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        subprocess.run([sys.executable, __file__, f"--_child={kind}", f"--_count={count}", f"--json={out.name}"],
                       check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        return json.load(open(out.name))


def summarize(search: list[dict], calls: list[dict]) -> dict:
    out = {}
    if len(search) >= 12:
        first, last = search[11], search[-1]
        out["search"] = {
            "peak_mb_after_round_12": round(first["peak_mb"], 1),
            f"peak_mb_after_round_{len(search)}": round(last["peak_mb"], 1),
            "peak_growth_mb_per_round": round((last["peak_mb"] - first["peak_mb"]) / (len(search) - 12), 2),
            "rss_growth_mb_per_round": round((last["rss_mb"] - first["rss_mb"]) / (len(search) - 12), 2),
        }
    if len(calls) >= 3:
        # The first call warms TensorFlow up (kernels, thread pools, the data's first load), and the
        # second's peak holds the first's data and the second's side by side: growth counts from call 2.
        first, second, last = calls[0], calls[1], calls[-1]
        out["calls"] = {
            "peak_mb_after_call_1": round(first["peak_mb"], 1),
            "peak_mb_after_call_2": round(second["peak_mb"], 1),
            f"peak_mb_after_call_{len(calls)}": round(last["peak_mb"], 1),
            "peak_growth_mb_per_call": round((last["peak_mb"] - second["peak_mb"]) / (len(calls) - 2), 2),
            "rss_growth_mb_per_call": round((last["rss_mb"] - second["rss_mb"]) / (len(calls) - 2), 2),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=48)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--json", default=None, help="also write the samples and the summary here")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_count", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        os.environ.setdefault("TF_LOTTERY_OFFLINE", "1")
        samples = measure_search(args._count) if args._child == "search" else measure_calls(args._count)
        with open(args.json, "w") as f:
            json.dump(samples, f)
        return
    search = _child("search", args.rounds) if args.rounds else []
    calls = _child("calls", args.calls) if args.calls else []
    summary = summarize(search, calls)
    print(json.dumps(summary, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "search": search, "calls": calls}, f, indent=1)


if __name__ == "__main__":
    main()
