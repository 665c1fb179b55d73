"""The numbers of a report: every curve (`curves`, `compare_curves`) and table, pure functions of loaded runs.

Replicates (the same search with other seeds) are averaged per round with min and max as error
bars, as the paper's figures are. The tests check these numbers; `plots` only draws them.
No TensorFlow, no matplotlib.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable, Optional, Sequence

import numpy as np

from tf_lottery.branches import MAIN
from tf_lottery.report.runs import STAGE_LABELS, STAGES, Group, Run

METRICS = ("early_stop_test_accuracy", "test_accuracy", "early_stop_iteration")
# Levels of weights remaining (percent) that the paper's Figure 3 shows for Lenet-300-100.
PAPER_LEVELS = (100.0, 51.3, 21.1, 7.0, 3.6, 1.9)
# What a comparison plots and tabulates for each series.
COMPARE_METRIC = "early_stop_test_accuracy"


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


def aggregate(label: str, points: Iterable[tuple[float, float, float]]) -> Optional[Series]:
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


def stage_metrics(row: dict, stage: str) -> Optional[dict]:
    """The metrics of one branch in a summary row (the ticket's are the row itself)."""
    return row if stage == MAIN else row.get("controls", {}).get(stage)


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


# -- the curves of one search --------------------------------------------------------------------
def metric_series(runs: Sequence[Run], metric: str, stage: str, label: str) -> Optional[Series]:
    """`metric` of branch `stage` versus percent of weights remaining, averaged over the runs."""
    points = []
    for run in runs:
        for r, row in run.rounds.items():
            metrics = stage_metrics(row, stage)
            if metrics is not None and metric in metrics:
                points.append((r, 100.0 * float(row["weights_remaining"]), metrics[metric]))
    return aggregate(label, points)


def _history_curves(runs: Sequence[Run], levels: Sequence[float]) -> dict[str, Optional[Series]]:
    level_of = round_levels(runs)
    with_history = {r: v for r, v in level_of.items() if any((r, MAIN) in run.histories for run in runs)}
    out = {}
    for r in choose_rounds(with_history, levels):
        for stage in STAGES:
            points = [(e["iteration"], e["iteration"], e["test_accuracy"])
                      for run in runs for e in run.histories.get((r, stage), [])]
            out[f"history/{stage}/round_{r:02d}"] = aggregate(f"{level_of[r]:.3g}% ({STAGE_LABELS[stage]})", points)
    return out


def _layer_curves(runs: Sequence[Run]) -> dict[str, Optional[Series]]:
    names = sorted({name for run in runs for row in run.rounds.values() for name in row.get("layers", {})})
    out = {}
    for name in names:
        points = [(r, r, 100.0 * float(row["layers"][name]))
                  for run in runs for r, row in run.rounds.items() if name in row.get("layers", {})]
        out[f"layers/{name}"] = aggregate(name, points)
    out["layers/all"] = aggregate("all layers", [
        (r, r, 100.0 * float(row["weights_remaining"])) for run in runs for r, row in run.rounds.items()
    ])
    return out


def curves(runs: Sequence[Run], levels: Sequence[float] = PAPER_LEVELS) -> dict[str, Series]:
    """Every curve of the report, by name.

    "<metric>/<stage>": metric (early_stop_test_accuracy, test_accuracy, early_stop_iteration)
    versus percent of weights remaining, per branch (main, random_reinit, random_prune, ...);
    "history/<stage>/round_RR": test accuracy versus training iteration at the rounds nearest
    `levels`; "layers/<name>": percent of a layer's weights remaining versus round
    ("layers/all" for the whole network).
    """
    out = {f"{metric}/{stage}": metric_series(runs, metric, stage, STAGE_LABELS[stage])
           for metric in METRICS for stage in STAGES}
    out.update(_history_curves(runs, levels))
    out.update(_layer_curves(runs))
    return {k: s for k, s in out.items() if s is not None}


# -- comparing searches --------------------------------------------------------------------------
def series_label(group: Group, stage: str) -> str:
    """`retrain=lr_rewind` for a group's own networks, `retrain=lr_rewind, random reinit` for a branch."""
    if stage == MAIN:
        return group.label or STAGE_LABELS[stage]
    return f"{group.label}, {STAGE_LABELS[stage]}" if group.label else STAGE_LABELS[stage]


def compare_key(group: Group, stage: str) -> str:
    """The name of a group's branch in the curves: "compare/<group label>/<stage>"."""
    return f"compare/{group.label or 'all runs'}/{stage}"


def compare_curves(groups: Sequence[Group], branches: Sequence[str] = (MAIN,)) -> dict[str, Series]:
    """Early-stop test accuracy versus percent of weights remaining, one Series per group and branch.

    Keyed by `compare_key`, groups in the order given, then branches in the order given.
    """
    out = {}
    for group in groups:
        for stage in branches:
            series = metric_series(group.runs, COMPARE_METRIC, stage, series_label(group, stage))
            if series is not None:
                out[compare_key(group, stage)] = series
    return out


# -- tables ----------------------------------------------------------------------------------------
def format_cell(values: list[float], digits: int, percent: bool = False) -> str:
    if not values:
        return "-"
    scale = 100.0 if percent else 1.0
    fmt = f"{{:.{digits}f}}"
    mean = fmt.format(scale * float(np.mean(values)))
    if len(values) == 1:
        return mean
    return f"{mean} ({fmt.format(scale * min(values))}-{fmt.format(scale * max(values))})"


def _column(rows: list[dict], stage: str, metric: str) -> list[float]:
    return [float(m[metric]) for m in (stage_metrics(row, stage) for row in rows) if m and metric in m]


def markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body]) + "\n"


def table(runs: Sequence[Run]) -> str:
    """A Markdown table, one row per round: mean (min-max) over replicates of each metric."""
    controls = [c for c in STAGES[1:] if any(c in row["controls"] for run in runs for row in run.rounds.values())]
    header = ["Round", "Weights remaining %", "Ticket early-stop acc %", "Ticket final acc %", "Ticket early-stop it."]
    for c in controls:
        header += [f"{STAGE_LABELS[c].capitalize()} early-stop acc %", f"{STAGE_LABELS[c].capitalize()} early-stop it."]
    header.append("Runs")
    body = []
    for r in sorted({r for run in runs for r in run.rounds}):
        rows = [run.rounds[r] for run in runs if r in run.rounds]
        cells = [
            str(r),
            f"{100.0 * float(np.mean([row['weights_remaining'] for row in rows])):.2f}",
            format_cell(_column(rows, MAIN, "early_stop_test_accuracy"), 2, percent=True),
            format_cell(_column(rows, MAIN, "test_accuracy"), 2, percent=True),
            format_cell(_column(rows, MAIN, "early_stop_iteration"), 0),
        ]
        for c in controls:
            cells += [format_cell(_column(rows, c, "early_stop_test_accuracy"), 2, percent=True),
                      format_cell(_column(rows, c, "early_stop_iteration"), 0)]
        body.append(cells + [str(len(rows))])
    return markdown_table(header, body)


def _compared_series(groups: Sequence[Group], branches: Sequence[str]) -> list[tuple[Group, str]]:
    return [(g, s) for g in groups for s in branches
            if any(stage_metrics(row, s) for run in g.runs for row in run.rounds.values())]


def shared_levels(groups: Sequence[Group]) -> bool:
    """Whether every group's round r keeps the same percent of weights (to 2 decimals) where both have it."""
    levels = [round_levels(g.runs) for g in groups]
    return all(f"{a[r]:.2f}" == f"{b[r]:.2f}" for a in levels for b in levels for r in set(a) & set(b))


def comparison_table(groups: Sequence[Group], branches: Sequence[str] = (MAIN,)) -> str:
    """A Markdown table of early-stop test accuracy, mean (min-max) over each group's replicates, one
    column per series, rows at matched sparsity: one row per round when every group prunes to the
    same levels, else `matched_table`'s rows by level."""
    if not shared_levels(groups):
        return matched_table(groups, branches)
    series = _compared_series(groups, branches)
    levels = [round_levels(g.runs) for g in groups]
    header = ["Round", "Weights remaining %"] + [f"{series_label(g, s)} early-stop acc %" for g, s in series]
    body = []
    for r in sorted({r for g in groups for run in g.runs for r in run.rounds}):
        cells = [str(r), f"{np.mean([lv[r] for lv in levels if r in lv]):.2f}"]
        for group, stage in series:
            rows = [run.rounds[r] for run in group.runs if r in run.rounds]
            cells.append(format_cell(_column(rows, stage, COMPARE_METRIC), 2, percent=True))
        body.append(cells)
    return markdown_table(header, body)


# Levels of weights remaining within 1% of each other (relative) are one level.
MATCH_TOLERANCE = 0.01
INTERPOLATED_NOTE = ("`*`: interpolated, for each run, between its two nearest levels on a log scale of weights "
                     "remaining (never extrapolated); `-`: outside the search's levels.")


def matched_levels(groups: Sequence[Group]) -> list[float]:
    """Every level (percent of weights remaining) some group measured, those within MATCH_TOLERANCE merged."""
    kept: list[float] = []
    for level in sorted({lv for g in groups for lv in round_levels(g.runs).values()}, reverse=True):
        if not kept or abs(math.log(kept[-1] / level)) > MATCH_TOLERANCE:
            kept.append(level)
    return kept


def value_at(points: Sequence[tuple[float, float]], level: float) -> tuple[Optional[float], bool]:
    """(value, interpolated) of a run's (percent remaining, value) points at `level`: the point measured
    there (within MATCH_TOLERANCE), else linear in log(percent) between the nearest points on each
    side, else (None, False)."""
    for x, y in points:
        if abs(math.log(x / level)) <= MATCH_TOLERANCE:
            return y, False
    below, above = [p for p in points if p[0] < level], [p for p in points if p[0] > level]
    if not below or not above:
        return None, False
    (x0, y0), (x1, y1) = max(below), min(above)
    t = (math.log(level) - math.log(x0)) / (math.log(x1) - math.log(x0))
    return y0 + t * (y1 - y0), True


def matched_values(group: Group, stage: str, level: float, metric: str = COMPARE_METRIC) -> tuple[list[float], bool]:
    """Each of the group's runs' `metric` of branch `stage` at `level` (see `value_at`), and whether any
    of them was interpolated."""
    values, interpolated = [], False
    for run in group.runs:
        points = sorted((100.0 * float(row["weights_remaining"]), float(m[metric]))
                        for row in run.rounds.values() for m in [stage_metrics(row, stage)] if m and metric in m)
        value, between = value_at(points, level)
        if value is not None:
            values.append(value)
            interpolated |= between
    return values, interpolated


def matched_table(groups: Sequence[Group], branches: Sequence[str] = (MAIN,)) -> str:
    """Searches pruned to other levels, side by side at the same sparsity: one row per level any of them
    measured (`matched_levels`), each cell the mean (min-max) over a group's runs, `*` where interpolated."""
    series = _compared_series(groups, branches)
    header = ["Weights remaining %"] + [f"{series_label(g, s)} early-stop acc %" for g, s in series]
    body = []
    for level in matched_levels(groups):
        cells = [f"{level:.2f}"]
        for group, stage in series:
            values, interpolated = matched_values(group, stage, level)
            cells.append(format_cell(values, 2, percent=True) + ("*" if interpolated else ""))
        body.append(cells)
    return markdown_table(header, body) + "\n" + INTERPOLATED_NOTE + "\n"
