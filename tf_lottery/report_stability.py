"""The instability analysis in a report: instability versus rewind step per level, and test error along the path.

Reads each run's `instability/level_RR_k_KKKKK/path.json` (written by `tf_lottery.stability`,
checked by `RunDirectory.load_instability`). Replicates are averaged per (level, k) with min-max
bars, as the rest of the report is. Numbers (`curves`, `table`) are pure functions of the loaded
results; `PLOTS` draws them: instability.png (the paper's instability versus k, one line per level)
and instability_paths.png (test error versus alpha at the levels nearest the report's --levels).
No TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from tf_lottery.report_data import PAPER_LEVELS, Series, aggregate, format_cell, markdown_table, choose_rounds
from tf_lottery.report_plots import in_percent, pyplot, save_figure
from tf_lottery.report_runs import Run
from tf_lottery.run_directory import RunDirectory


@dataclasses.dataclass
class Results:
    """The instability results of the runs of a report: (run, {(level, rewind_step): path.json}) pairs."""

    runs: list[tuple[Run, dict[tuple[int, int], dict]]]

    def __bool__(self) -> bool:
        return any(found for _, found in self.runs)

    def keys(self) -> list[tuple[int, int]]:
        return sorted({key for _, found in self.runs for key in found})

    def rows(self, level: int, rewind_step: int) -> list[dict]:
        return [found[level, rewind_step] for _, found in self.runs if (level, rewind_step) in found]

    def levels(self) -> dict[int, float]:
        """Mean percent of weights remaining of each analyzed level."""
        out: dict[int, list[float]] = {}
        for _, found in self.runs:
            for (level, _), row in found.items():
                out.setdefault(level, []).append(100.0 * row["weights_remaining"])
        return {level: float(np.mean(v)) for level, v in sorted(out.items())}


def load_results(runs: Sequence[Run], notes: list[str]) -> Results:
    """Every run's path.json files, checked; each is added to its run's files (so --data_out copies it),
    and a folder without one (a pair still training) becomes a note."""
    out = []
    for run in runs:
        directory = RunDirectory(run.path)
        found = {}
        for level, k in directory.instability_on_disk():
            row = directory.load_instability(level, k)
            if row is None:
                notes.append(f"{os.path.basename(os.path.normpath(run.path))}: instability of level {level} from "
                             f"rewind step {k} not finished")
                continue
            found[level, k] = row
            path = os.path.join(directory.instability_dir(level, k), "path.json")
            run.files.append(os.path.relpath(path, directory.path))
        out.append((run, found))
    return Results(out)


def level_label(level: int, percent: float) -> str:
    return "dense (100%)" if level == 0 else f"level {level} ({percent:.3g}% remaining)"


def curves(results: Results, levels: Sequence[float] = PAPER_LEVELS) -> dict[str, Series]:
    """"instability/level_RR": the barrier versus rewind step k, one Series per level;
    "instability_path/level_RR/k_KKKKK": test error versus alpha, for each analyzed (level, k) at the
    levels nearest `levels` (percent of weights remaining)."""
    percent = results.levels()
    out = {}
    for level in percent:
        points = [(k, k, row["barrier"]) for lv, k in results.keys() if lv == level for row in results.rows(lv, k)]
        out[f"instability/level_{level:02d}"] = aggregate(level_label(level, percent[level]), points)
    for level in choose_rounds(percent, levels):
        for lv, k in results.keys():
            if lv == level:
                points = [(a, a, e) for row in results.rows(lv, k) for a, e in zip(row["alphas"], row["errors"])]
                out[f"instability_path/level_{level:02d}/k_{k:05d}"] = aggregate(f"k = {k}", points)
    return {key: s for key, s in out.items() if s is not None}


def table(results: Results) -> list[str]:
    """report.md's section: one row per (level, k), mean (min-max) over runs, in percent."""
    percent = results.levels()
    body = []
    for level, k in results.keys():
        rows = results.rows(level, k)
        body.append([
            str(level), f"{percent[level]:.2f}", str(k),
            format_cell([r["barrier"] for r in rows], 2, percent=True),
            format_cell([r["errors"][0] for r in rows], 2, percent=True),
            format_cell([r["errors"][-1] for r in rows], 2, percent=True),
            format_cell([max(r["errors"]) for r in rows], 2, percent=True),
            str(len(rows[0]["alphas"])), str(len(rows)),
        ])
    header = ["Level", "Weights remaining %", "Rewind step k", "Instability %", "Error of copy a %",
              "Error of copy b %", "Max error on path %", "Points", "Runs"]
    return ["## Instability", "",
            "Two copies of each level's network start from the dense run's weights at iteration k (masked) and "
            "train on different data orders; the instability is the test error barrier on the straight line "
            "between them (maximum error on the path minus the mean of the two ends), mean (min-max) over runs.",
            "", markdown_table(header, body)]


# -- plots -----------------------------------------------------------------------------------------
def _level_colors(plt, count: int):
    return plt.get_cmap("viridis")(np.linspace(0, 0.85, max(1, count)))


def plot_instability(data: dict[str, Series], path: str, title: str) -> bool:
    """Instability (%) versus rewind step k on a symmetric-log axis (k = 0 included), one line per level."""
    keys = sorted(k for k in data if k.startswith("instability/"))
    if not keys:
        return False
    plt = pyplot()
    from matplotlib.ticker import FixedLocator, NullLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for color, key in zip(_level_colors(plt, len(keys)), keys):
        s = in_percent(data[key])
        ax.errorbar(s.x, s.mean, yerr=[s.mean - s.low, s.high - s.mean], color=color, marker="o", markersize=4,
                    linewidth=1.4, capsize=3, label=s.label)
    steps = sorted({float(x) for key in keys for x in data[key].x})
    positive = [x for x in steps if x > 0]
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0, linscale=0.5)
    ax.xaxis.set_major_locator(FixedLocator(steps))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{x:g}" for x in steps])
    ax.set_xlabel("Rewind step k (iteration the two copies start from)")
    ax.set_ylabel("Instability (test error barrier, %)")
    ax.set_title("Instability versus rewind step")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(title)
    save_figure(fig, path)
    plt.close(fig)
    return True


def plot_paths(data: dict[str, Series], path: str, title: str) -> bool:
    """Test error (%) versus alpha, one panel per level, one line per rewind step."""
    keys = sorted(k for k in data if k.startswith("instability_path/"))
    if not keys:
        return False
    plt = pyplot()
    levels = sorted({k.split("/")[1] for k in keys})
    fig, axes = plt.subplots(1, len(levels), figsize=(4.8 * len(levels), 4.2), sharey=True, squeeze=False)
    for ax, level in zip(axes[0], levels):
        mine = [k for k in keys if k.split("/")[1] == level]
        for color, key in zip(_level_colors(plt, len(mine)), mine):
            s = in_percent(data[key])
            ax.plot(s.x, s.mean, color=color, marker="o", markersize=3, linewidth=1.2, label=s.label)
            if np.any(s.count > 1):
                ax.fill_between(s.x, s.low, s.high, color=color, alpha=0.2, linewidth=0)
        barrier = data.get(f"instability/{level}")
        ax.set_title(barrier.label if barrier is not None else level)
        ax.set_xlabel("Interpolation alpha (0: copy a, 1: copy b)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("Test error (%)")
    fig.suptitle(f"{title}: test error on the line between the two copies", y=1.03)
    save_figure(fig, path)
    plt.close(fig)
    return True


PLOTS = (
    ("instability.png", plot_instability, "Instability (error barrier) versus rewind step"),
    ("instability_paths.png", plot_paths, "Test error on the linear path between the two copies"),
)


def section(results: Results, levels: Sequence[float]) -> tuple[dict, list[str], tuple]:
    """What write_report adds when the runs hold instability results: (curves, report.md lines, plots)."""
    if not results:
        return {}, [], ()
    return curves(results, levels), table(results), PLOTS
