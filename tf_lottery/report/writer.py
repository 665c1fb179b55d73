"""Plots and tables of ticket searches, drawn from the small files of their run directories alone.

`write_report` reads the runs (`runs`: every file checked), computes every number
(`data`: `curves`, `table`, pure functions) and draws them (`plots`). Replicates (the
same search with other seeds) are averaged per round with min-max error bars, as the paper's
figures are; with `compare=True`, runs of different searches are drawn as separate series instead,
labelled by the config fields where they differ. Rounds or controls that have not finished are
left out of the curves and listed in `notes`. Runs holding an instability analysis (lottery-instability)
also get its plots and table (`instability`). Imports no TensorFlow.

    report.write_report(["runs/lenet3"], "reports/lenet3")
    report.curves(report.load_runs(["runs/lenet3"]))  # the numbers alone
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

from tf_lottery.branches import MAIN
from tf_lottery.data import raw_files
from tf_lottery.files import make_directories, remove_directories, atomic_write_bytes, atomic_write_json, temporary_name
from tf_lottery.report import instability
from tf_lottery.report.data import (
    METRICS, PAPER_LEVELS, Series, choose_rounds, compare_curves, compare_key, comparison_table, curves, matched_table, round_levels,
    table,
)
from tf_lottery.report.plots import COMPARE_PLOT, PLOTS
from tf_lottery.report.runs import (
    STAGE_LABELS, STAGES, Group, Run, consistency_notes, differing_fields, find_runs, group_runs, is_run_dir, load_run,
    load_runs,
)

# The report's public API, one import away (README: report.write_report, report.curves, report.load_runs).
__all__ = [
    "METRICS", "PAPER_LEVELS", "Group", "Report", "Run", "STAGES", "STAGE_LABELS", "Series", "choose_rounds",
    "compare_curves", "compare_key", "comparison_table", "matched_table", "consistency_notes", "curves", "differing_fields",
    "export_data", "find_runs", "group_runs", "is_run_dir", "load_run", "load_runs", "round_levels", "table",
    "write_report",
]


@dataclasses.dataclass
class Report:
    """What `write_report` wrote (and copied), and what it found missing."""

    files: list[str]
    notes: list[str]
    runs: list[str]
    copied: list[str] = dataclasses.field(default_factory=list)


# -- destinations ------------------------------------------------------------------------------
def _writable(path: str) -> list[str]:
    """Make sure files can be written into directory `path` (an OSError naming it if not), before
    anything is; return the directories created for it."""
    created = make_directories(path)
    probe = temporary_name(os.path.join(path, "probe"))
    try:
        with open(probe, "xb"):
            pass
        os.unlink(probe)
    except OSError as e:
        remove_directories(created)
        raise OSError(e.errno, e.strerror, path) from None
    return created


def _destinations(*paths: Optional[str]) -> None:
    """Check every destination before writing into any: on failure, the directories made are removed."""
    created: list[str] = []
    try:
        for path in paths:
            if path is not None:
                created += _writable(path)
    except OSError:
        remove_directories(created)
        raise


# -- report.md -------------------------------------------------------------------------------------
def _config_lines(run: Run) -> list[str]:
    """The first run's settings; its rounds as finished (a resumed run may have gone past the rounds
    its config.json first asked for: `rounds` is not a result field)."""
    experiment = run.experiment
    m, d, t, p = experiment.model, experiment.data, experiment.training, experiment.pruning
    budget = f"{t.iterations} iterations" if t.iterations else f"{t.epochs} epochs"
    output = "half its kind" if p.output_rate is None else p.output_rate
    return [
        f"- model `{m.model}`, dataset `{d.dataset}`, {len(run.rounds)} rounds, {p.schedule} {p.pruning_scope} "
        f"{p.pruning_strategy} pruning (fc {p.fc_rate}, conv {p.conv_rate}, output {output}"
        f"{''.join(f', {item}' for item in getattr(p, 'layer_rates', ()))}), "
        f"retrain {p.retrain} (rewind_step {p.rewind_step})",
        f"- training: {t.optimizer} lr {t.learning_rate}, batch {t.batch_size}, {budget} a round, "
        f"evaluated every {t.eval_every} iterations; controls: {', '.join(p.controls) or 'none'}",
    ]


def _data_lines(runs: Sequence[Run]) -> list[str]:
    """Where each run's data came from (one line when they agree), and why a search stopped early."""
    seen: dict[str, list[str]] = {}
    for run in runs:
        line = raw_files.source_line(run.data_source, files=True) if run.data_source else "not recorded (a run from before 0.3)"
        if run.data_fingerprint:
            line += f"; data fingerprint `{run.data_fingerprint}`"
        seen.setdefault(line, []).append(os.path.basename(os.path.normpath(run.path)))
    if len(seen) == 1:
        lines = [f"- data: {next(iter(seen))}"]
    else:
        lines = [f"- data of {', '.join(names)}: {line}" for line, names in seen.items()]
    for run in runs:
        if run.stop:
            lines.append(f"- {os.path.basename(os.path.normpath(run.path))} stopped after round "
                         f"{run.stop['after_round']}: {run.stop['reason']}")
    return lines


def _shown_path(path: str, out: str) -> str:
    """A run's path relative to the report when it is near it (a checked-in copy), else absolute."""
    relative = os.path.relpath(path, out)
    return os.path.abspath(path) if relative.startswith(os.pardir + os.sep + os.pardir) else relative


def _title(runs: Sequence[Run], compare: bool = False) -> str:
    names = {(r.experiment.model.model, r.experiment.data.dataset) for r in runs}
    what = " and ".join(f"{model} on {dataset}" for model, dataset in sorted(names))
    if compare:
        fields = differing_fields(runs)
        return f"{what}, by {', '.join(fields)}" if fields else what
    n = len(runs)
    return what + (f" ({n} replicates, mean with min-max bars)" if n > 1 else "")


def _header(runs: Sequence[Run], out: str, title: str, command: Optional[str], notes: list[str]) -> list[str]:
    lines = [f"# {title}", "", f"Runs: {', '.join(f'`{_shown_path(r.path, out)}`' for r in runs)}", ""]
    lines += _config_lines(runs[0])
    lines += _data_lines(runs)
    fields = differing_fields(runs)
    if fields:
        lines.append(f"- the runs differ in {', '.join(f'`{f}`' for f in fields)}: the lines above are the first run's")
    lines.append("")
    if command:
        lines += ["Made with:", "", "```", command, "```", ""]
    if notes:
        lines += ["## Missing", ""] + [f"- {n}" for n in notes] + [""]
    return lines


def _draw(plots, data, out: str, title: str, notes: list[str]) -> tuple[list[str], list[str]]:
    """Draw each plot that has data: (files written, report.md sections for them)."""
    files, sections = [], []
    for name, draw, caption in plots:
        path = os.path.join(out, name)
        if draw(data, path, title):
            files.append(path)
            sections += [f"## {caption}", "", f"![{caption}]({name})", ""]
        else:
            notes.append(f"{name} not drawn: no finished round has its data")
    return files, sections


def _check_branches(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in STAGES]
    if unknown or not names:
        what = f"unknown branch {unknown[0]!r}" if unknown else "no branch"
        raise ValueError(f"{what} in branches={','.join(names)}; allowed: {', '.join(STAGES)}")


def _compare_sections(runs: Sequence[Run], names: Sequence[str], notes: list[str]):
    """The numbers and tables of a comparison: (curves, report.md lines)."""
    groups = group_runs(runs)
    data = compare_curves(groups, names)
    for group in groups:
        for stage in names:
            if compare_key(group, stage) not in data:
                notes.append(f"{group.label or 'all runs'}: no finished {stage} network")
    lines = ["## Comparison", "",
             "Test accuracy at early stop in percent, mean (min-max) over each search's runs.", "",
             comparison_table(groups, names)]
    for group in groups:
        lines += [f"## Rounds: {group.label or 'all runs'}", "", table(group.runs)]
    return data, lines


# -- the whole report ------------------------------------------------------------------------------
def write_report(
    run_dirs: Sequence[str],
    out: str,
    levels: Sequence[float] = PAPER_LEVELS,
    command: Optional[str] = None,
    compare: bool = False,
    branches: Sequence[str] = (MAIN,),
    data_out: Optional[str] = None,
) -> Report:
    """Write the plots, `report.md` (tables, notes) and `curves.json` (the numbers plotted) into `out`.

    Every run is read and checked, and `out` (and `data_out`) made sure to be writable, before
    anything is written. `compare` draws each search (runs differing in more than the seed) as its
    own series in compare.png, for each branch in `branches`. `data_out` also receives `export_data`'s
    copy of the runs' files. Raises ValueError for a run that is not sound, OSError for a
    destination that cannot be written.
    """
    runs = load_runs(run_dirs)
    _check_branches(branches)
    notes = ([] if compare else consistency_notes(runs)) + [n for run in runs for n in run.notes]
    stability = instability.load_results(runs, notes)  # also lists their files for data_out
    title = _title(runs, compare)
    if compare:
        data, tables = _compare_sections(runs, branches, notes)
        plots = (COMPARE_PLOT,)
    else:
        data = curves(runs, levels)
        tables = ["## Rounds", "", "Mean (min-max) over runs; accuracy in percent of the test set.", "", table(runs)]
        plots = PLOTS
        extra_data, extra_tables, extra_plots = instability.section(stability, levels)
        data, tables, plots = {**data, **extra_data}, tables + extra_tables, plots + extra_plots
    _destinations(out, data_out)
    files, sections = _draw(plots, data, out, title, notes)
    curves_path = os.path.join(out, "curves.json")
    atomic_write_json(curves_path, {k: s.to_dict() for k, s in data.items()})
    lines = _header(runs, out, title, command, notes) + tables + sections
    report_path = os.path.join(out, "report.md")
    atomic_write_bytes(report_path, "\n".join(lines).encode())
    copied = _copy(runs, data_out) if data_out is not None else []
    return Report(files=[report_path, *files, curves_path], notes=notes, runs=[r.path for r in runs], copied=copied)


def export_data(run_dirs: Sequence[str], dest: str) -> list[str]:
    """Copy the small files of each run under `dest`, each checked first: config.json, summary.json,
    rounds.csv (for spreadsheets; the report itself does not read it) and round_RR/<branch>.json.

    One run lands in `dest` itself, several in `dest/<run folder name>/`. Returns the paths written.
    """
    runs = load_runs(run_dirs)
    _destinations(dest)
    return _copy(runs, dest)


def _copy(runs: Sequence[Run], dest: str) -> list[str]:
    """Each run's files under `dest`, at its path below the runs' common folder (replicates of several
    searches keep apart: weight_rewind/seed_0, lr_rewind/seed_0)."""
    names: list[str] = []
    written = []
    paths = [os.path.abspath(run.path) for run in runs]
    common = os.path.commonpath(paths) if len(paths) > 1 else ""
    for run, path in zip(runs, paths):
        name = os.path.relpath(path, common) if common and path != common else os.path.basename(path)
        while name in names:
            name += "_"
        names.append(name)
        target = dest if len(runs) == 1 else os.path.join(dest, name)
        for relative in run.files:
            with open(os.path.join(run.path, relative), "rb") as f:
                atomic_write_bytes(os.path.join(target, relative), f.read())
            written.append(os.path.join(target, relative))
    return written
