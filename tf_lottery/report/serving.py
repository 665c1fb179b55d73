"""The serving frontier: test accuracy against measured serving latency and size, per granularity.

Reads the JSON that `benchmarks/serving_latency.py` writes (every export kind of every round,
timed side by side in one process, with each seed's early-stop accuracy and its random
re-initialization's) and draws `frontier.png` (accuracy against batch-256 latency, and against size
on disk) and `report.md` (the table, and which exports reach the goals, computed from the data).
Imports no TensorFlow.
"""

from __future__ import annotations

import io
import json
import os
import statistics
from typing import Sequence

from tf_lottery.files import atomic_write_bytes

MARKERS = {"weight": "o", "unit": "s", "block": "^", "m_by_n": "D"}
STYLES = {"dense": "-", "sparse": "--", "compact": "-", "tflite": ":"}
DROPS = (0.5, 1.0)  # accuracy below dense (points) at which the fastest export of each kind is named


def load(path: str) -> dict:
    """The benchmark's record, checked to hold what the report reads (one line naming the problem otherwise)."""
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"--serving={path!r} cannot be read as the JSON of benchmarks/serving_latency.py ({e})") from None
    entries = record.get("entries") if isinstance(record, dict) else None
    keys = ("granularity", "round", "kind", "weights_remaining", "accuracy", "b1_us", "b256_us", "size_bytes")
    if not entries or not all(isinstance(e, dict) and all(k in e for k in keys) for e in entries):
        raise ValueError(f"--serving={path!r} is not the JSON of benchmarks/serving_latency.py (entries with {', '.join(keys)})")
    if not any(e["round"] == 0 and e["kind"] == "dense" for e in entries):
        raise ValueError(f"--serving={path!r} has no round 0 (the dense network, the reference point)")
    return record


def _mean(values: Sequence[float]) -> float:
    return statistics.mean(values) if values else float("nan")


def dense_accuracy(record: dict, entry: dict) -> list[float]:
    """The dense accuracies a ticket is held against: its own search's round 0, over the same seeds
    (`dense_accuracy`, recorded since searches of different seed counts share one report); else the
    report's dense network."""
    if "dense_accuracy" in entry:
        return entry["dense_accuracy"]
    return next(e for e in record["entries"] if e["round"] == 0 and e["kind"] == "dense")["accuracy"]


def goals(record: dict, accuracy_drop: float = 0.005) -> list[dict]:
    """Per export kind of each granularity: the fastest batch-256 export whose mean early-stop accuracy is at
    least its dense network's minus `accuracy_drop` (None when no round of it is)."""
    entries = record["entries"]
    out = []
    for key in sorted({(e["granularity"], e["kind"]) for e in entries if e["round"] > 0}):
        good = [e for e in entries if (e["granularity"], e["kind"]) == key and e["round"] > 0
                and _mean(e["accuracy"]) >= _mean(dense_accuracy(record, e)) - accuracy_drop]
        out.append({"granularity": key[0], "kind": key[1], "best": min(good, key=lambda e: e["b256_vs_dense"]) if good else None})
    return out


def reinit_lines(record: dict) -> list[str]:
    """Per granularity: ticket minus re-initialization at each round, and how many rounds each wins."""
    out = []
    for granularity in sorted({e["granularity"] for e in record["entries"] if e["round"] > 0}):
        rows, seen = [], set()
        for e in sorted((e for e in record["entries"] if e["granularity"] == granularity and e["round"] > 0),
                        key=lambda e: e["round"]):
            if e["round"] in seen or not e.get("reinit_accuracy"):
                continue
            seen.add(e["round"])
            rows.append((e["weights_remaining"], 100 * (_mean(e["accuracy"]) - _mean(e["reinit_accuracy"]))))
        if not rows:
            continue
        wins = sum(1 for _, d in rows if d > 0)
        cells = ", ".join(f"{100 * w:.1f}%: {d:+.2f}" for w, d in rows)
        out.append(f"- {granularity}: the ticket is ahead at {wins} of {len(rows)} levels ({cells})")
    return out


def markdown(record: dict, command: str = "") -> str:
    entries = record["entries"]
    dense = next(e for e in entries if e["round"] == 0 and e["kind"] == "dense")
    seeds = dense.get("seeds", len(dense["accuracy"]))
    per_search = {}
    for e in entries:
        if e["round"] > 0:
            per_search.setdefault(e["granularity"], e.get("seeds", len(e["accuracy"])))
    if set(per_search.values()) - {seeds}:  # searches of other seed counts: each against its own dense network
        counted = ", ".join(f"{label} {n}" for label, n in per_search.items())
        over = (f"over each search's seeds ({counted}; the dense row {seeds}), each ticket against its own "
                "search's dense network over the same seeds")
    else:
        over = f"over {seeds} seed(s)"
    memory = any("peak_mb" in e for e in entries)
    lines = [
        "# Accuracy against serving cost",
        "",
        f"Measured {record.get('date', '?')} on {record.get('machine', '?')}, TensorFlow {record.get('tensorflow', '?')}, "
        f"load average {', '.join(f'{x:.1f}' for x in record.get('load_average', []))}; "
        f"{record.get('blocks', '?')} interleaved blocks of {record.get('calls', '?')} calls (batch 1) and "
        f"{max(10, int(record.get('calls', 100)) // 10)} calls (batch 256), median block, through `serving_default` "
        "of `tf.saved_model.load` (TFLite: its interpreter's signature runner).",
        "",
        f"Accuracy: early-stop test accuracy, mean [min-max] {over}; latency and size: the first seed's "
        "exports (every seed prunes to the same counts). x: against the dense network's SavedModel; TFLite rows "
        "against the dense network's TFLite file (another runtime).",
        "",
    ]
    if record.get("command"):
        lines += [f"Measured with: `{record['command']}`", ""]
    if command:
        lines += [f"Drawn with: `{command}`", ""]
    lines += ["![frontier](frontier.png)"]
    for points in DROPS:  # issue 17's goals: Lenet within 0.5 points of dense, Conv-2 within 1
        unit = "point" if points == 1 else "points"
        lines += ["", f"## Reaching dense accuracy minus {points:g} {unit}, fastest at batch 256", ""]
        for goal in goals(record, points / 100):
            best = goal["best"]
            if best is None:
                lines.append(f"- {goal['granularity']} / {goal['kind']}: no round within {points:g} {unit} of dense")
                continue
            reference = "the dense TFLite file" if goal["kind"] == "tflite" else "dense"
            lines.append(
                f"- {goal['granularity']} / {goal['kind']}: round {best['round']} ({100 * best['weights_remaining']:.2f}% "
                f"of weights), accuracy {100 * _mean(best['accuracy']):.2f} vs dense {100 * _mean(dense_accuracy(record, best)):.2f}; "
                f"batch 256 {best['b256_vs_dense']:.2f}x {reference}, batch 1 {best['b1_vs_dense']:.2f}x, "
                f"size {best['size_vs_dense']:.2f}x")
    lines += ["", "## Each ticket against its random re-initialization", "",
              "Liu et al. (2019) find that structured networks re-initialized at random train as well as the pruned "
              "ones; Frankle & Carbin (2019) that unstructured tickets beat their re-initialization once sparse. "
              "Mean early-stop test accuracy (points) of the ticket minus its re-initialization, per round, here:", ""]
    lines += reinit_lines(record)
    lines += ["", "## Every export", "",
              "| granularity | round | kind | weights left | kernels | accuracy % | reinit % | batch 1 us (x dense) | "
              "batch 256 us (x dense) | size B (x dense) |" + (" resident MB |" if memory else ""),
              "|---|---:|---|---:|---|---:|---:|---:|---:|---:|" + ("---:|" if memory else "")]
    for e in entries:
        acc = e["accuracy"]
        reinit = e.get("reinit_accuracy") or []
        shapes = " ".join("x".join(map(str, s)) for s in (e.get("kernel_shapes") or {}).values())
        lines.append(
            f"| {e['granularity'] if e['round'] else 'dense'} | {e['round']} | {e['kind']} | {100 * e['weights_remaining']:.2f}% | "
            f"{shapes} | {100 * _mean(acc):.2f} [{100 * min(acc):.2f}-{100 * max(acc):.2f}] | "
            f"{f'{100 * _mean(reinit):.2f}' if reinit else '-'} | {e['b1_us']:.0f} ({e['b1_vs_dense']:.2f}) | "
            f"{e['b256_us']:.0f} ({e['b256_vs_dense']:.2f}) | {e['size_bytes']:,} ({e['size_vs_dense']:.2f}) |"
            + ((f" {e['peak_mb']:.1f} |" if "peak_mb" in e else " - |") if memory else ""))
    return "\n".join(lines) + "\n"


def plot(record: dict, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    entries = record["entries"]
    dense = next(e for e in entries if e["round"] == 0 and e["kind"] == "dense")
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, x_key, label in ((axes[0], "b256_us", "batch-256 latency per call (us)"), (axes[1], "size_bytes", "size on disk (bytes)")):
        for key in sorted({(e["granularity"], e["kind"]) for e in entries if e["round"] > 0}):
            points = sorted((e for e in entries if (e["granularity"], e["kind"]) == key and e["round"] > 0), key=lambda e: e[x_key])
            xs = [e[x_key] for e in points]
            line, = ax.plot(xs, [100 * _mean(e["accuracy"]) for e in points], marker=MARKERS.get(key[0], "o"),
                            linestyle=STYLES.get(key[1], "-"), label=f"{key[0]} / {key[1]}")
            reinit = [(x, 100 * _mean(e["reinit_accuracy"])) for x, e in zip(xs, points) if e.get("reinit_accuracy")]
            if reinit:
                ax.plot(*zip(*reinit), marker=MARKERS.get(key[0], "o"), linestyle="none", markerfacecolor="none",
                        color=line.get_color(), alpha=0.6, label=f"{key[0]} / {key[1]}: random re-init")
        ax.plot([dense[x_key]], [100 * _mean(dense["accuracy"])], marker="*", markersize=14, color="black",
                linestyle="none", label="dense network")
        for e in entries:
            if e["round"] == 0 and e["kind"] == "tflite":
                ax.plot([e[x_key]], [100 * _mean(e["accuracy"])], marker="*", markersize=14, color="gray",
                        linestyle="none", label="dense network (TFLite)")
        ax.axhline(100 * _mean(dense["accuracy"]) - 0.5, color="gray", linewidth=0.8, linestyle=":")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # labels of 2x, 3x... overlapped
        ax.set_xlabel(label)
        ax.set_ylabel("early-stop test accuracy (%)")
        ax.grid(True, alpha=0.3)
    axes[0].set_title(f"{title}: accuracy against latency")
    axes[1].set_title("against size")
    handles, labels = axes[0].get_legend_handles_labels()
    legend = fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", bbox_extra_artists=[legend])
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def write(serving_json: str, out: str, command: str = "", title: str = "") -> list[str]:
    """report.md and frontier.png in `out` from the benchmark's JSON; the files written."""
    record = load(serving_json)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise OSError(f"--out={out!r} cannot be created ({e.strerror})") from None
    title = title or os.path.basename(os.path.normpath(out))
    png, md = os.path.join(out, "frontier.png"), os.path.join(out, "report.md")
    plot(record, png, title)
    atomic_write_bytes(md, markdown(record, command).encode())
    return [md, png]
