"""The instability analysis in a report: instability versus rewind step per level, and test error along the path.

Reads each run's `instability/level_RR_k_KKKKK[_VARIANT]/path.json` (written by `tf_lottery.analysis.instability`,
checked by `RunDirectory.load_instability`; the variant names a mask of IMP rewound to k and a
control). Replicates are averaged per (level, k, variant) with min-max bars, as the rest of the
report is. Numbers (`curves`, `table`) are pure functions of the loaded
results; `PLOTS` draws them: instability.png (the paper's instability versus k, one line per level)
and instability_paths.png (test error versus alpha at the levels nearest the report's --levels).
No TensorFlow.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from tf_lottery.report.data import PAPER_LEVELS, Series, aggregate, format_cell, markdown_table, choose_rounds
from tf_lottery.report.plots import in_percent, pyplot, save_figure
from tf_lottery.report.runs import Run
from tf_lottery.search.run_directory import RunDirectory


CONTROL_LABELS = {"": "IMP", "random_prune": "random pruning", "random_reinit": "random reinit"}
Key = tuple[int, int, str]  # (level, rewind step, variant): the folder's level_RR_k_KKKKK[_VARIANT]


def split_variant(variant: str) -> tuple[bool, str]:
    """"mask_k_random_prune" -> (True, "random_prune"): whether the mask is IMP's rewound to k, and the control."""
    per_k = variant == "mask_k" or variant.startswith("mask_k_")
    return per_k, variant[len("mask_k_"):] if variant.startswith("mask_k_") else ("" if per_k else variant)


@dataclasses.dataclass
class Results:
    """The instability results of the runs of a report: (run, {(level, rewind_step, variant): path.json}) pairs."""

    runs: list[tuple[Run, dict[Key, dict]]]

    def __bool__(self) -> bool:
        return any(found for _, found in self.runs)

    def keys(self) -> list[Key]:
        return sorted({key for _, found in self.runs for key in found})

    def rows(self, key: Key) -> list[dict]:
        return [found[key] for _, found in self.runs if key in found]

    def levels(self) -> dict[int, float]:
        """Mean percent of weights remaining of each analyzed level (its ticket's, controls alike)."""
        out: dict[int, list[float]] = {}
        for _, found in self.runs:
            for (level, _, _), row in found.items():
                out.setdefault(level, []).append(100.0 * row["weights_remaining"])
        return {level: float(np.mean(v)) for level, v in sorted(out.items())}

    def families(self) -> dict[tuple[int, bool, str], list[Key]]:
        """(level, per_k, control) -> the keys of one line of the instability plot, by k.

        With `--mask_per_k`, the cells at the run's own rewind step carry no mask_k (the run's mask is
        IMP's at that k), so they join the per-k line there; run-mask cells at any other k (made
        without --mask_per_k) keep the run-mask line, which is dropped only when it has no cell left."""
        keys = self.keys()
        # The rewind step every run shares, or None: then no run-mask cell stands for IMP's at its k.
        steps = {run.experiment.pruning.rewind_step for run, found in self.runs if found}
        own_step = steps.pop() if len(steps) == 1 else None
        out: dict[tuple[int, bool, str], list[Key]] = {}
        for level, k, variant in keys:
            per_k, control = split_variant(variant)
            out.setdefault((level, per_k, control), []).append((level, k, variant))
        for (level, per_k, control), members in list(out.items()):
            if not per_k:
                continue
            covered = {k for _, k, _ in members}
            own = out.get((level, False, control), [])
            joined = [key for key in own if key[1] == own_step and key[1] not in covered]
            out[level, True, control] = sorted(members + joined)
            if own and len(joined) == len(own):
                del out[level, False, control]
        return dict(sorted(out.items()))


def load_results(runs: Sequence[Run], notes: list[str]) -> Results:
    """Every run's path.json files, checked; each is added to its run's files (so --data_out copies it),
    and a folder without one (a pair still training) becomes a note."""
    out = []
    for run in runs:
        directory = RunDirectory(run.path)
        found = {}
        for level, k, variant in directory.instability_on_disk():
            row = directory.load_instability(level, k, variant=variant)
            if row is None:
                what = f" ({variant})" if variant else ""
                notes.append(f"{os.path.basename(os.path.normpath(run.path))}: instability of level {level}{what} from "
                             f"rewind step {k} not finished")
                continue
            found[level, k, variant] = row
            path = os.path.join(directory.instability_dir(level, k, variant=variant), "path.json")
            run.files.append(os.path.relpath(path, directory.path))
        out.append((run, found))
    return Results(out)


def level_label(level: int, percent: float) -> str:
    return "dense (100%)" if level == 0 else f"level {level} ({percent:.3g}% remaining)"


def family_label(per_k: bool, control: str) -> str:
    """"IMP rewound to k", "random pruning" (at its counts), "IMP (run's mask)", "random reinit (run's mask)", ..."""
    if per_k:
        return "IMP rewound to k" if not control else CONTROL_LABELS.get(control, control)
    return CONTROL_LABELS.get(control, control) + " (run's mask)"


def curve_key(level: int, per_k: bool, control: str) -> str:
    """"instability/level_RR" for the run's tickets; "/mask_k", "/random_prune", ... for the rest."""
    variant = "_".join((["mask_k"] if per_k else []) + ([control] if control else []))
    return f"instability/level_{level:02d}" + (f"/{variant}" if variant else "")


def curves(results: Results, levels: Sequence[float] = PAPER_LEVELS) -> dict[str, Series]:
    """"instability/level_RR[/VARIANT]": the barrier versus rewind step k, one Series per line of
    `Results.families`; "instability_path/level_RR/k_KKKKK": the ticket's test error versus alpha (IMP
    rewound to k where analyzed so), for each analyzed k at the levels nearest `levels` (percent remaining)."""
    percent = results.levels()
    families = results.families()
    out = {}
    for (level, per_k, control), keys in families.items():
        points = [(key[1], key[1], row["barrier"]) for key in keys for row in results.rows(key)]
        label = level_label(level, percent[level]) + ("" if level == 0 else f": {family_label(per_k, control)}")
        out[curve_key(level, per_k, control)] = aggregate(label, points)
    for level in choose_rounds(percent, levels):
        ticket = families.get((level, True, "")) or families.get((level, False, ""), [])
        for key in ticket:
            points = [(a, a, e) for row in results.rows(key) for a, e in zip(row["alphas"], row["errors"])]
            out[f"instability_path/level_{level:02d}/k_{key[1]:05d}"] = aggregate(f"k = {key[1]}", points)
    return {key: s for key, s in out.items() if s is not None}


def table(results: Results) -> list[str]:
    """report.md's section: one row per (level, k, mask, control), mean (min-max) over runs, in percent."""
    percent = results.levels()
    # A cell at the run's own rewind step is on the per-k line too: its mask is IMP's rewound to that k.
    per_k_keys = {key for (_, per_k, _), keys in results.families().items() if per_k for key in keys}
    body = []
    for key in results.keys():
        level, k, variant = key
        rows = results.rows(key)
        control = split_variant(variant)[1]
        body.append([
            str(level), f"{percent[level]:.2f}", str(k), "IMP rewound to k" if key in per_k_keys else "run's",
            CONTROL_LABELS.get(control, control) if control else "-",
            format_cell([r["barrier"] for r in rows], 2, percent=True),
            format_cell([r["errors"][0] for r in rows], 2, percent=True),
            format_cell([r["errors"][-1] for r in rows], 2, percent=True),
            format_cell([max(r["errors"]) for r in rows], 2, percent=True),
            str(len(rows[0]["alphas"])), str(len(rows)),
        ])
    header = ["Level", "Weights remaining %", "Rewind step k", "Mask", "Control", "Instability %",
              "Error of copy a %", "Error of copy b %", "Max error on path %", "Points", "Runs"]
    return ["## Instability", "",
            "Two copies of each level's network start from the dense run's weights at iteration k (masked) and "
            "train on different data orders; the instability is the test error barrier on the straight line "
            "between them (maximum error on the path minus the mean of the two ends), mean (min-max) over runs. "
            "Mask: the run's own round, or that round of an IMP search rewound to k (`--mask_per_k`, the paper's "
            "protocol). Control: random pruning (a random mask with the same per-layer counts, from theta_k) or "
            "random reinit (the mask, kernels drawn afresh).",
            "", markdown_table(header, body)]


# -- plots -----------------------------------------------------------------------------------------
def _level_colors(plt, count: int):
    return plt.get_cmap("viridis")(np.linspace(0, 0.85, max(1, count)))


def plot_instability(data: dict[str, Series], path: str, title: str) -> bool:
    """Instability (%) versus rewind step k on a symmetric-log axis (k = 0 included): one panel per level
    when controls or per-k masks were analyzed (a line each), else one line per level on one axis."""
    keys = sorted(k for k in data if k.startswith("instability/"))
    if not keys:
        return False
    plt = pyplot()
    from matplotlib.ticker import FixedLocator, NullLocator

    levels = sorted({key.split("/")[1] for key in keys})
    panels = levels if any(key.count("/") > 1 for key in keys) else ["all"]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(7, 4.8 * len(panels)), 4.5), sharey=True, squeeze=False)
    steps = sorted({float(x) for key in keys for x in data[key].x})
    positive = [x for x in steps if x > 0]
    for ax, panel in zip(axes[0], panels):
        mine = [key for key in keys if panel == "all" or key.split("/")[1] == panel]
        styles = {"": "-", "random_prune": "--", "random_reinit": ":"}
        for color, key in zip(_level_colors(plt, len(mine)), mine):
            s = in_percent(data[key])
            control = split_variant(key.split("/")[2])[1] if key.count("/") > 1 else ""
            ax.errorbar(s.x, s.mean, yerr=[s.mean - s.low, s.high - s.mean], color=color, marker="o", markersize=4,
                        linewidth=1.4, capsize=3, linestyle=styles.get(control, "-"),
                        label=s.label if panel == "all" else s.label.split(": ", 1)[-1])
        ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0, linscale=0.5)
        ax.xaxis.set_major_locator(FixedLocator(steps))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{x:g}" for x in steps])
        ax.set_xlabel("Rewind step k (iteration the two copies start from)")
        first = data[mine[0]].label.split(": ", 1)[0]
        ax.set_title("Instability versus rewind step" if panel == "all" else first)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("Instability (test error barrier, %)")
    fig.suptitle(title, y=1.02 if len(panels) > 1 else None)
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
