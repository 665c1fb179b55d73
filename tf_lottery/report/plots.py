"""The report's figures, drawn with matplotlib (Agg) from the Series of `tf_lottery.report.data`; nothing is computed here.

Each `plot_*` takes the curves by name, writes one PNG atomically and returns False when it has
nothing to draw. Branch colours and line styles follow the branch registry's order.
"""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np

from tf_lottery.files import atomic_write_bytes
from tf_lottery.report.data import Series
from tf_lottery.report.runs import STAGE_LABELS, STAGES

STAGE_COLORS = {name: f"C{i}" for i, name in enumerate(STAGES)}
# In a comparison colour tells the searches apart, so the line tells the branches apart.
_LINE_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "v", "D", "P")
# Controls share the ticket's x; a small shift on the log axis keeps their error bars apart (drawing only).
_DODGE = {name: 1.0 + 0.015 * ((i + 1) // 2) * (-1) ** i for i, name in enumerate(STAGES)}


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ticks(xs: Sequence[float], most: int = 7) -> list[float]:
    """At most `most` tick positions from the x values, largest first, none within 3% of another
    (searches compared side by side prune to nearly the same levels; their labels would overlap)."""
    distinct: list[float] = []
    for x in sorted(xs, reverse=True):
        if not distinct or distinct[-1] / x > 1.03:
            distinct.append(x)
    return distinct[:: max(1, math.ceil(len(distinct) / most))]


def _weights_axis(ax, series: Sequence[Series]) -> None:
    """Log-scaled percent of weights remaining, decreasing to the right like the paper's figures."""
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log")
    xs = [float(x) for s in series for x in s.x]
    ticks = _ticks(xs)  # at most 7 labels: more overlap in a half-width panel
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:.3g}" for t in ticks])
    if xs:
        ax.set_xlim(max(xs) * 1.15, min(xs) / 1.15)
    ax.set_xlabel("Percent of weights remaining")
    ax.grid(True, alpha=0.3)


def _errorbar(ax, s: Series, color: str, dodge: float = 1.0, **kwargs) -> None:
    kwargs = {"marker": "o", "markersize": 3, "linewidth": 1.2, **kwargs}
    ax.errorbar(s.x * dodge, s.mean, yerr=[s.mean - s.low, s.high - s.mean], color=color, capsize=3,
                label=s.label, **kwargs)


def in_percent(s: Series) -> Series:
    return Series(s.label, s.x, 100 * s.mean, 100 * s.low, 100 * s.high, s.count)


def save_figure(fig, path: str, extra_artists=()) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", bbox_extra_artists=list(extra_artists) or None)
    atomic_write_bytes(path, buffer.getvalue())


def plot_accuracy(data: dict[str, Series], path: str, title: str) -> bool:
    plt = pyplot()
    panels = [("early_stop_test_accuracy", "at early stop (min. validation loss)"), ("test_accuracy", "at end of training")]
    series = [data[f"{m}/{s}"] for m, _ in panels for s in STAGES if f"{m}/{s}" in data]
    if not series:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, (metric, what) in zip(axes, panels):
        for stage in STAGES:
            s = data.get(f"{metric}/{stage}")
            if s is not None:
                _errorbar(ax, in_percent(s), STAGE_COLORS[stage], _DODGE[stage])
        _weights_axis(ax, series)
        ax.set_title(f"Test accuracy {what}")
        ax.legend()
    axes[0].set_ylabel("Test accuracy (%)")
    fig.suptitle(title)
    save_figure(fig, path)
    plt.close(fig)
    return True


def plot_early_stop(data: dict[str, Series], path: str, title: str) -> bool:
    plt = pyplot()
    series = [data[f"early_stop_iteration/{s}"] for s in STAGES if f"early_stop_iteration/{s}" in data]
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for stage in STAGES:
        s = data.get(f"early_stop_iteration/{stage}")
        if s is not None:
            _errorbar(ax, s, STAGE_COLORS[stage], _DODGE[stage])
    _weights_axis(ax, series)
    ax.set_ylabel("Early-stop iteration (min. validation loss)")
    ax.set_title("Early-stop iteration")
    ax.legend()
    fig.suptitle(title)
    save_figure(fig, path)
    plt.close(fig)
    return True


def plot_training(data: dict[str, Series], path: str, title: str) -> bool:
    plt = pyplot()
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
    save_figure(fig, path)
    plt.close(fig)
    return True


def plot_layers(data: dict[str, Series], path: str, title: str) -> bool:
    plt = pyplot()
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
    save_figure(fig, path)
    plt.close(fig)
    return True


def _compare_legends(ax, groups: list[str], colors, stages: list[str]) -> list:
    """One legend entry per series while they are few; else one legend of searches (colour) and one
    of branches (line), which reads better than every combination spelled out."""
    from matplotlib.lines import Line2D

    place = {"fontsize": 8, "loc": "upper left", "borderaxespad": 0}
    if len(groups) == 1 or len(stages) == 1:
        return [ax.legend(bbox_to_anchor=(1.01, 1.0), **place)]
    searches = [Line2D([], [], color=c, marker="o", markersize=4, label=g) for g, c in zip(groups, colors)]
    lines = [Line2D([], [], color="0.3", marker=_MARKERS[STAGES.index(s) % len(_MARKERS)], markersize=4,
                    linestyle=_LINE_STYLES[STAGES.index(s) % len(_LINE_STYLES)], label=STAGE_LABELS[s]) for s in stages]
    first = ax.legend(handles=searches, title="search", bbox_to_anchor=(1.01, 1.0), **place)
    ax.add_artist(first)  # the next legend would replace it otherwise
    place["loc"] = "lower left"
    return [first, ax.legend(handles=lines, title="network", bbox_to_anchor=(1.01, 0.0), **place)]


def plot_compare(data: dict[str, Series], path: str, title: str) -> bool:
    """One axis, one series per search and branch ("compare/<search>/<branch>"): colour per search
    (per branch when there is one search), line style and marker per branch; searches are spread a
    little along x so error bars stay apart."""
    keys = [k for k in data if k.startswith("compare/")]
    if not keys:
        return False
    plt = pyplot()
    groups = list(dict.fromkeys(k[len("compare/"):].rsplit("/", 1)[0] for k in keys))
    stages = [s for s in STAGES if any(k.endswith(f"/{s}") for k in keys)]
    colors = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")(np.arange(len(groups)) % 20)
    step = min(0.012, 0.05 / max(1, len(groups) - 1))
    fig, ax = plt.subplots(figsize=(8.5, 5))
    for key in keys:
        group, stage = key[len("compare/"):].rsplit("/", 1)
        i, style = groups.index(group), STAGES.index(stage)
        if len(groups) == 1:  # one search: its branches look as in accuracy.png
            color, dodge = STAGE_COLORS[stage], _DODGE[stage]
        else:
            color, dodge = colors[i], 1.0 + step * (i - (len(groups) - 1) / 2)
        _errorbar(ax, in_percent(data[key]), color, dodge, linestyle=_LINE_STYLES[style % len(_LINE_STYLES)],
                  marker=_MARKERS[style % len(_MARKERS)])
    _weights_axis(ax, [data[k] for k in keys])
    ax.set_ylabel("Test accuracy at early stop (%)")
    ax.set_title("Test accuracy at early stop (min. validation loss)")
    legends = _compare_legends(ax, groups, colors, stages)
    save_figure(fig, path, legends + [fig.suptitle(title), ax.title])  # given extra artists, tight bbox counts only those
    plt.close(fig)
    return True


PLOTS = (
    ("accuracy.png", plot_accuracy, "Test accuracy versus weights remaining"),
    ("early_stop.png", plot_early_stop, "Early-stop iteration versus weights remaining"),
    ("training.png", plot_training, "Test accuracy during training at chosen levels"),
    ("layers.png", plot_layers, "Weights remaining per layer and round"),
)
COMPARE_PLOT = ("compare.png", plot_compare, "Test accuracy at early stop versus weights remaining, by search")
