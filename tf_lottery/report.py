"""Plots and tables of ticket searches, drawn from summary.json and the per-round logs alone.

The numbers behind every curve come from `curves`, a pure function of the loaded runs, so the
tests check the data and `write_report` only draws it. Replicates (the same search with other
seeds) are averaged per round with min and max as error bars, as the paper's figures are.
Rounds or controls that have not finished are left out of the curves and listed in `notes`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
from typing import Iterable, Optional, Sequence

import numpy as np

from tf_lottery import branches
from tf_lottery import run_directory as rundir
from tf_lottery.files import atomic_write_bytes, atomic_write_json

STAGES = tuple(branches.names())
STAGE_LABELS = {name: branches.get(name).label for name in STAGES}
METRICS = ("early_stop_test_accuracy", "test_accuracy", "early_stop_iteration")
# Levels of weights remaining (percent) that the paper's Figure 3 shows for Lenet-300-100.
PAPER_LEVELS = (100.0, 51.3, 21.1, 7.0, 3.6, 1.9)
_ROUND_DIR = re.compile(r"^round_(\d+)$")
_STAGE_COLORS = {name: f"C{i}" for i, name in enumerate(STAGES)}


@dataclasses.dataclass
class Run:
    """One run directory as the report sees it: its config, finished rounds and evaluation histories."""

    path: str
    config: dict
    rounds: dict[int, dict]  # round -> summary row (metrics, "layers", "controls")
    histories: dict[tuple[int, str], list[dict]]  # (round, stage) -> evaluations
    notes: list[str]  # what is missing, in one line each


@dataclasses.dataclass
class Series:
    """One curve: mean, min and max over replicates at each x, and how many replicates each point has."""

    label: str
    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    count: np.ndarray

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            **{k: getattr(self, k).tolist() for k in ("x", "mean", "low", "high", "count")},
        }


@dataclasses.dataclass
class Report:
    """What `write_report` wrote, and what it found missing."""

    files: list[str]
    notes: list[str]
    runs: list[str]


# -- loading -----------------------------------------------------------------------------------
def is_run_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "summary.json")) or os.path.isfile(os.path.join(path, "config.json"))


def find_runs(paths: Iterable[str]) -> list[str]:
    """Run directories named by `paths`: each a run, or a parent of replicate runs (seed_<s>/ ...)."""
    found = []
    for path in paths:
        if not os.path.isdir(path):
            raise ValueError(f"run_dir {path!r} does not exist or is not a directory")
        if is_run_dir(path):
            found.append(path)
            continue
        children = sorted(
            (os.path.join(path, name) for name in os.listdir(path)),
            key=lambda p: _natural_key(os.path.basename(p)),
        )
        runs = [c for c in children if os.path.isdir(c) and is_run_dir(c)]
        if not runs:
            raise ValueError(
                f"{path!r} is not a tf_lottery run directory (no summary.json or config.json, "
                "and no run directories inside)"
            )
        found.extend(runs)
    if not found:
        raise ValueError("no run directories given; pass --run_dir=<a lottery-find output_dir>")
    return found


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def load_run(path: str) -> Run:
    """Read a run directory, finished or not, checking every file; what is absent becomes a note."""
    if not is_run_dir(path):
        raise ValueError(f"{path!r} is not a tf_lottery run directory (no summary.json or config.json)")
    run = rundir.RunDirectory(path)
    summary = run.read_summary() if os.path.isfile(run.file("summary.json")) else None
    if os.path.isfile(run.config_file):
        config = run.read_record()["config"]
    else:
        config = summary["config"]
    rounds = {int(r["round"]): dict(r, controls=dict(r.get("controls", {}))) for r in (summary or {}).get("rounds", [])}
    histories: dict[tuple[int, str], list[dict]] = {}
    for round_index in run.rounds_on_disk():
        for stage in STAGES:
            if not os.path.isfile(run.stage_file(round_index, stage)):
                continue
            result = run.load_stage(round_index, stage)
            histories[(round_index, stage)] = list(result["history"])
            metrics = {k: v for k, v in result.items() if k != "history"}
            # A stage that finished after the last summary (a round still running) still counts.
            if stage == "main" and round_index not in rounds:
                rounds[round_index] = dict(metrics, round=round_index, controls={})
            elif stage != "main" and round_index in rounds and stage not in rounds[round_index]["controls"]:
                rounds[round_index]["controls"][stage] = {k: v for k, v in metrics.items() if k != "layers"}
    return Run(path=path, config=config, rounds=dict(sorted(rounds.items())), histories=histories,
               notes=_missing(path, config, rounds, histories))


def _missing(path: str, config: dict, rounds: dict, histories: dict) -> list[str]:
    pruning = config.get("pruning", {})
    expected_rounds = int(pruning.get("rounds", 0) or 0)
    controls = tuple(pruning.get("controls", ()))
    name = os.path.basename(os.path.normpath(path))
    notes = []
    absent = [r for r in range(expected_rounds) if r not in rounds]
    if absent:
        notes.append(f"{name}: rounds {_ranges(absent)} of {expected_rounds} not finished")
    for r, row in sorted(rounds.items()):
        for control in controls:
            if r > 0 and control not in row["controls"]:
                notes.append(f"{name}: round {r} {control} not finished")
        for stage in ("main",) + tuple(row["controls"]):
            if (r, stage) not in histories:
                notes.append(f"{name}: round {r} {stage} has no evaluation history (round_{r:02d}/{stage}.json missing)")
    return notes


def _ranges(values: Sequence[int]) -> str:
    out, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(out)


def load_runs(paths: Iterable[str]) -> list[Run]:
    """Every run named by `paths` (runs or parents of replicates), loaded."""
    return [load_run(p) for p in find_runs(paths)]


def consistency_notes(runs: Sequence[Run]) -> list[str]:
    """Replicates should differ only in their seed: name the config fields where they do not."""
    def comparable(config):
        d = json.loads(json.dumps(config))
        d.get("runtime", {}).pop("seed", None)
        d.get("data", {}).pop("data_dir", None)
        return {f"{s}.{k}": v for s, section in d.items() if isinstance(section, dict) for k, v in section.items()
                if s in ("model", "data", "training", "pruning")}

    if len(runs) < 2:
        return []
    first = comparable(runs[0].config)
    differing = sorted({k for run in runs[1:] for k, v in comparable(run.config).items() if first.get(k) != v})
    if not differing:
        return []
    return [f"runs differ in more than the seed ({', '.join(differing)}): their mean mixes different searches"]


# -- the data behind each curve ------------------------------------------------------------------
def _aggregate(label: str, points: Iterable[tuple[float, float, float]]) -> Optional[Series]:
    """(group key, x, y) points -> one Series: x and y averaged per key, min/max of y, replicate count."""
    groups: dict[float, list[tuple[float, float]]] = {}
    for key, x, y in points:
        if y is None or (isinstance(y, float) and math.isnan(y)):
            continue
        groups.setdefault(key, []).append((float(x), float(y)))
    if not groups:
        return None
    keys = sorted(groups)
    xs = np.array([np.mean([p[0] for p in groups[k]]) for k in keys])
    ys = [np.array([p[1] for p in groups[k]]) for k in keys]
    return Series(
        label=label,
        x=xs,
        mean=np.array([y.mean() for y in ys]),
        low=np.array([y.min() for y in ys]),
        high=np.array([y.max() for y in ys]),
        count=np.array([len(y) for y in ys]),
    )


def _stage_metrics(row: dict, stage: str) -> Optional[dict]:
    return row if stage == "main" else row.get("controls", {}).get(stage)


def round_levels(runs: Sequence[Run]) -> dict[int, float]:
    """Mean percent of weights remaining of each finished round over the runs."""
    values: dict[int, list[float]] = {}
    for run in runs:
        for r, row in run.rounds.items():
            values.setdefault(r, []).append(100.0 * float(row["weights_remaining"]))
    return {r: float(np.mean(v)) for r, v in sorted(values.items())}


def choose_rounds(levels: dict[int, float], wanted: Sequence[float]) -> list[int]:
    """For each wanted percent, the round whose weights remaining is nearest on a log scale (no repeats)."""
    chosen: list[int] = []
    for target in wanted:
        if not levels or target <= 0:
            continue
        best = min(levels, key=lambda r: (abs(math.log(levels[r] / target)), r))
        if best not in chosen:
            chosen.append(best)
    return chosen


def curves(runs: Sequence[Run], levels: Sequence[float] = PAPER_LEVELS) -> dict[str, Series]:
    """Every curve of the report, by name.

    "<metric>/<stage>": metric (early_stop_test_accuracy, test_accuracy, early_stop_iteration)
    versus percent of weights remaining, per stage (main, random_reinit, random_prune);
    "history/<stage>/round_RR": test accuracy versus training iteration at the rounds nearest
    `levels`; "layers/<name>": percent of a layer's weights remaining versus round
    ("layers/all" for the whole network).
    """
    out: dict[str, Series] = {}

    def put(key, series):
        if series is not None:
            out[key] = series

    for metric in METRICS:
        for stage in STAGES:
            points = []
            for run in runs:
                for r, row in run.rounds.items():
                    metrics = _stage_metrics(row, stage)
                    if metrics is not None and metric in metrics:
                        points.append((r, 100.0 * float(row["weights_remaining"]), metrics[metric]))
            put(f"{metric}/{stage}", _aggregate(STAGE_LABELS[stage], points))

    level_of = round_levels(runs)
    with_history = {r: v for r, v in level_of.items() if any((r, "main") in run.histories for run in runs)}
    for r in choose_rounds(with_history, levels):
        for stage in STAGES:
            points = [
                (e["iteration"], e["iteration"], e["test_accuracy"])
                for run in runs
                for e in run.histories.get((r, stage), [])
            ]
            put(f"history/{stage}/round_{r:02d}", _aggregate(f"{level_of[r]:.3g}% ({STAGE_LABELS[stage]})", points))

    layer_names = sorted({name for run in runs for row in run.rounds.values() for name in row.get("layers", {})})
    for name in layer_names:
        points = [
            (r, r, 100.0 * float(row["layers"][name]))
            for run in runs
            for r, row in run.rounds.items()
            if name in row.get("layers", {})
        ]
        put(f"layers/{name}", _aggregate(name, points))
    put("layers/all", _aggregate("all layers", [
        (r, r, 100.0 * float(row["weights_remaining"])) for run in runs for r, row in run.rounds.items()
    ]))
    return out


# -- the table -------------------------------------------------------------------------------------
def _cell(values: list[float], digits: int, percent: bool = False) -> str:
    if not values:
        return "-"
    scale = 100.0 if percent else 1.0
    fmt = f"{{:.{digits}f}}"
    mean = fmt.format(scale * float(np.mean(values)))
    if len(values) == 1:
        return mean
    return f"{mean} ({fmt.format(scale * min(values))}-{fmt.format(scale * max(values))})"


def table(runs: Sequence[Run]) -> str:
    """A Markdown table, one row per round: mean (min-max) over replicates of each metric."""
    controls = [c for c in STAGES[1:] if any(c in row["controls"] for run in runs for row in run.rounds.values())]
    header = ["Round", "Weights remaining %", "Ticket early-stop acc %", "Ticket final acc %", "Ticket early-stop it."]
    for c in controls:
        header += [f"{STAGE_LABELS[c].capitalize()} early-stop acc %", f"{STAGE_LABELS[c].capitalize()} early-stop it."]
    header.append("Runs")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    round_indices = sorted({r for run in runs for r in run.rounds})
    for r in round_indices:
        rows = [run.rounds[r] for run in runs if r in run.rounds]

        def col(stage, metric):
            return [float(m[metric]) for m in (_stage_metrics(row, stage) for row in rows) if m and metric in m]

        cells = [
            str(r),
            f"{100.0 * float(np.mean([row['weights_remaining'] for row in rows])):.2f}",
            _cell(col("main", "early_stop_test_accuracy"), 2, percent=True),
            _cell(col("main", "test_accuracy"), 2, percent=True),
            _cell(col("main", "early_stop_iteration"), 0),
        ]
        for c in controls:
            cells += [_cell(col(c, "early_stop_test_accuracy"), 2, percent=True), _cell(col(c, "early_stop_iteration"), 0)]
        cells.append(str(len(rows)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# -- drawing ---------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _weights_axis(ax, series: Sequence[Series]) -> None:
    """Log-scaled percent of weights remaining, decreasing to the right like the paper's figures."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log")
    xs = sorted({float(x) for s in series for x in s.x}, reverse=True)
    ticks = xs[:: max(1, math.ceil(len(xs) / 7))]  # at most 7 labels: more overlap in a half-width panel
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:.3g}" for t in ticks])
    if xs:
        ax.set_xlim(max(xs) * 1.15, min(xs) / 1.15)
    ax.set_xlabel("Percent of weights remaining")
    ax.grid(True, alpha=0.3)


# Controls share the ticket's x; a small shift on the log axis keeps their error bars apart (drawing only).
_DODGE = {name: 1.0 + 0.015 * ((i + 1) // 2) * (-1) ** i for i, name in enumerate(STAGES)}


def _errorbar(ax, s: Series, color: str, dodge: float = 1.0, **kwargs) -> None:
    ax.errorbar(s.x * dodge, s.mean, yerr=[s.mean - s.low, s.high - s.mean], color=color, marker="o", markersize=3,
                capsize=3, linewidth=1.2, label=s.label, **kwargs)


def _save(fig, path: str) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def _title(runs: Sequence[Run]) -> str:
    config = runs[0].config
    model = config.get("model", {}).get("model", "?")
    dataset = config.get("data", {}).get("dataset", "?")
    n = len(runs)
    return f"{model} on {dataset}" + (f" ({n} replicates, mean with min-max bars)" if n > 1 else "")


def plot_accuracy(data: dict[str, Series], path: str, title: str) -> bool:
    plt = _pyplot()
    panels = [("early_stop_test_accuracy", "at early stop (min. validation loss)"), ("test_accuracy", "at end of training")]
    series = [data[f"{m}/{s}"] for m, _ in panels for s in STAGES if f"{m}/{s}" in data]
    if not series:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, (metric, what) in zip(axes, panels):
        for stage in STAGES:
            s = data.get(f"{metric}/{stage}")
            if s is not None:
                percent = Series(s.label, s.x, 100 * s.mean, 100 * s.low, 100 * s.high, s.count)
                _errorbar(ax, percent, _STAGE_COLORS[stage], _DODGE[stage])
        _weights_axis(ax, series)
        ax.set_title(f"Test accuracy {what}")
        ax.legend()
    axes[0].set_ylabel("Test accuracy (%)")
    fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)
    return True


def plot_early_stop(data: dict[str, Series], path: str, title: str) -> bool:
    plt = _pyplot()
    series = [data[f"early_stop_iteration/{s}"] for s in STAGES if f"early_stop_iteration/{s}" in data]
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for stage in STAGES:
        s = data.get(f"early_stop_iteration/{stage}")
        if s is not None:
            _errorbar(ax, s, _STAGE_COLORS[stage], _DODGE[stage])
    _weights_axis(ax, series)
    ax.set_ylabel("Early-stop iteration (min. validation loss)")
    ax.set_title("Early-stop iteration")
    ax.legend()
    fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)
    return True


def plot_training(data: dict[str, Series], path: str, title: str) -> bool:
    plt = _pyplot()
    stages = [s for s in STAGES if any(k.startswith(f"history/{s}/") for k in data)]
    if not stages:
        return False
    rounds = sorted({k.rsplit("/", 1)[1] for k in data if k.startswith("history/")})
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, max(1, len(rounds))))
    fig, axes = plt.subplots(1, len(stages), figsize=(5.5 * len(stages), 4.5), sharey=True, squeeze=False)
    values = np.concatenate([100 * data[k].mean for k in data if k.startswith("history/")])
    for ax, stage in zip(axes[0], stages):
        for color, r in zip(colors, rounds):
            s = data.get(f"history/{stage}/{r}")
            if s is None:
                continue
            ax.plot(s.x, 100 * s.mean, color=color, linewidth=1.4, label=s.label.split(" (")[0] + " remaining")
            if np.any(s.count > 1):
                ax.fill_between(s.x, 100 * s.low, 100 * s.high, color=color, alpha=0.2, linewidth=0)
        ax.set_title(STAGE_LABELS[stage])
        ax.set_xlabel("Training iteration")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    # The first evaluations of sparse networks can be near chance; zoom on where the curves live.
    axes[0][0].set_ylim(max(0.0, np.percentile(values, 5) - 2.0), min(100.0, values.max() + 1.0))
    axes[0][0].set_ylabel("Test accuracy (%)")
    fig.suptitle(f"{title}: test accuracy during training")
    _save(fig, path)
    plt.close(fig)
    return True


def plot_layers(data: dict[str, Series], path: str, title: str) -> bool:
    plt = _pyplot()
    keys = [k for k in data if k.startswith("layers/") and k != "layers/all"]
    if not keys:
        return False
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    # Layers pruned at the same rate coincide: distinct markers keep each one visible.
    for k, marker in zip(keys, ("o", "x", "s", "+", "^", "v", "D", "*") * len(keys)):
        s = data[k]
        ax.plot(s.x, s.mean, marker=marker, markersize=5, fillstyle="none", label=s.label)
    if "layers/all" in data:
        s = data["layers/all"]
        ax.plot(s.x, s.mean, color="black", linestyle="--", label=s.label)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Round")
    ax.set_ylabel("Percent of weights remaining")
    ax.set_title("Weights remaining per layer")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)
    return True


PLOTS = (
    ("accuracy.png", plot_accuracy, "Test accuracy versus weights remaining"),
    ("early_stop.png", plot_early_stop, "Early-stop iteration versus weights remaining"),
    ("training.png", plot_training, "Test accuracy during training at chosen levels"),
    ("layers.png", plot_layers, "Weights remaining per layer and round"),
)


# -- the whole report ------------------------------------------------------------------------------
def _config_lines(config: dict) -> list[str]:
    t, p = config.get("training", {}), config.get("pruning", {})
    budget = f"{t.get('iterations')} iterations" if t.get("iterations") else f"{t.get('epochs')} epochs"
    return [
        f"- model `{config.get('model', {}).get('model')}`, dataset `{config.get('data', {}).get('dataset')}`, "
        f"{p.get('rounds')} rounds, {p.get('schedule')} {p.get('pruning_scope')} {p.get('pruning_strategy', 'magnitude')} pruning "
        f"(fc {p.get('fc_rate')}, conv {p.get('conv_rate')}, output "
        f"{'half its kind' if p.get('output_rate') is None else p.get('output_rate')}), "
        f"rewind to iteration {p.get('rewind_step')}",
        f"- training: {t.get('optimizer')} lr {t.get('learning_rate')}, batch {t.get('batch_size')}, {budget} a round, "
        f"evaluated every {t.get('eval_every')} iterations; controls: {', '.join(p.get('controls', ())) or 'none'}",
    ]


def _shown_path(path: str, out: str) -> str:
    """A run's path relative to the report when it is near it (a checked-in copy), else absolute."""
    relative = os.path.relpath(path, out)
    return os.path.abspath(path) if relative.startswith(os.pardir + os.sep + os.pardir) else relative


def write_report(
    run_dirs: Sequence[str],
    out: str,
    levels: Sequence[float] = PAPER_LEVELS,
    command: Optional[str] = None,
) -> Report:
    """Write the plots, `report.md` (table, notes) and `curves.json` (the numbers plotted) into `out`."""
    runs = load_runs(run_dirs)
    notes = consistency_notes(runs) + [n for run in runs for n in run.notes]
    data = curves(runs, levels)
    os.makedirs(out, exist_ok=True)
    title = _title(runs)
    files, drawn = [], []
    for name, draw, caption in PLOTS:
        path = os.path.join(out, name)
        if draw(data, path, title):
            files.append(path)
            drawn.append((name, caption))
        else:
            notes.append(f"{name} not drawn: no finished round has its data")
    curves_path = os.path.join(out, "curves.json")
    atomic_write_json(curves_path, {k: s.to_dict() for k, s in data.items()})
    files.append(curves_path)

    lines = [f"# {title}", ""]
    lines += [f"Runs: {', '.join(f'`{_shown_path(r.path, out)}`' for r in runs)}", ""]
    lines += _config_lines(runs[0].config) + [""]
    if command:
        lines += ["Made with:", "", "```", command, "```", ""]
    if notes:
        lines += ["## Missing", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["## Rounds", "", "Mean (min-max) over runs; accuracy in percent of the test set.", "", table(runs)]
    for name, caption in drawn:
        lines += [f"## {caption}", "", f"![{caption}]({name})", ""]
    report_path = os.path.join(out, "report.md")
    atomic_write_bytes(report_path, "\n".join(lines).encode())
    files.insert(0, report_path)
    return Report(files=files, notes=notes, runs=[r.path for r in runs])


def export_data(run_dirs: Sequence[str], dest: str) -> list[str]:
    """Copy the small files a report reads (summary, config, round JSONs) of each run under `dest`."""
    paths = find_runs(run_dirs)
    names: list[str] = []
    written = []
    for path in paths:
        name = os.path.basename(os.path.normpath(path))
        while name in names:
            name += "_"
        names.append(name)
        target = dest if len(paths) == 1 else os.path.join(dest, name)
        wanted = [f for f in ("config.json", "summary.json", "rounds.csv") if os.path.isfile(os.path.join(path, f))]
        for entry in sorted(os.listdir(path)):
            if _ROUND_DIR.match(entry):
                wanted += [os.path.join(entry, f"{s}.json") for s in STAGES if os.path.isfile(os.path.join(path, entry, f"{s}.json"))]
        for relative in wanted:
            with open(os.path.join(path, relative), "rb") as f:
                atomic_write_bytes(os.path.join(target, relative), f.read())
            written.append(os.path.join(target, relative))
    return written
