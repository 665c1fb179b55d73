"""The runs a report reads: found on disk, loaded through the run directory's checks, and grouped.

Every file the report reads (or `--data_out` copies) is read here and checked first: config.json by
`RunDirectory.read_record` plus the marks every tf_lottery record carries, summary.json by
`read_summary` and its config and fingerprint, each `round_RR/<branch>.json` by `load_stage`, and
rounds.csv for its columns. A file that fails is one ValueError naming it. No TensorFlow.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
from typing import Iterable, Optional, Sequence

from tf_lottery import branches
from tf_lottery import config as config_lib
from tf_lottery.files import corrupt, refuse_link
from tf_lottery.search import run_directory as rundir
from tf_lottery.search.run_checks import check_ours

STAGES = tuple(branches.names())
STAGE_LABELS = {name: branches.get(name).label for name in STAGES}
# Every fingerprint tf_lottery writes is 16 hex digits of a SHA-256 (config.fingerprint).
_REBUILD = "rerun lottery-find with the same flags to rebuild it"
# Fields that do not tell two searches apart: replicates differ in the seed, and the controls
# trained beside a ticket do not change the ticket (each branch draws its own random numbers).
REPLICATE_FIELDS = ("seed", "controls")


@dataclasses.dataclass
class Run:
    """One run directory as the report sees it: its config, finished rounds and evaluation histories."""

    path: str
    config: dict  # every field, in today's names (older runs are upgraded)
    rounds: dict[int, dict]  # round -> summary row (metrics, "layers", "controls")
    histories: dict[tuple[int, str], list[dict]]  # (round, stage) -> evaluations
    notes: list[str]  # what is missing, in one line each
    experiment: config_lib.ExperimentConfig
    files: list[str] = dataclasses.field(default_factory=list)  # relative paths read and checked
    data_source: dict = dataclasses.field(default_factory=dict)  # where its data came from (empty: not recorded)
    data_fingerprint: Optional[str] = None
    stop: Optional[dict] = None  # {"after_round", "reason"} when the search ended before its last round


@dataclasses.dataclass
class Group:
    """Runs of one search (they differ at most in REPLICATE_FIELDS), labelled by what sets it apart."""

    label: str
    runs: list[Run]


# -- finding runs ------------------------------------------------------------------------------
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


# -- the checks beyond the run directory's own -------------------------------------------------
def _record(run: rundir.RunDirectory) -> dict:
    return run.read_record()


def _summary(run: rundir.RunDirectory, record) -> tuple[dict, config_lib.ExperimentConfig]:
    """summary.json, checked row by row, and its config (checked as config.json would be)."""
    path = run.file("summary.json")
    summary = run.read_summary()
    version = summary.get("version", 1)
    if not isinstance(version, int) or version > config_lib.CONFIG_VERSION:
        raise corrupt(path, f"has layout version {version!r}, this tf_lottery reads up to "
                      f"{config_lib.CONFIG_VERSION}", "use a newer tf_lottery")
    try:
        experiment = config_lib.ExperimentConfig.from_dict(config_lib.upgrade(summary["config"], version))
    except (TypeError, ValueError) as e:
        raise corrupt(path, f"is not a tf_lottery summary ({e})", f"use another run_dir, or {_REBUILD}") from e
    check_ours(path, summary["config"], summary.get("fingerprint"))
    if record is not None and summary["fingerprint"] != record["fingerprint"]:
        raise corrupt(path, f"belongs to another run (fingerprint {summary['fingerprint']}, config.json has "
                      f"{record['fingerprint']})", _REBUILD)
    return summary, experiment


def check_rounds_csv(path: str) -> None:
    """rounds.csv as RunDirectory.write_summary writes it: its columns, then one integer round a row."""
    refuse_link(path)
    allowed = {f"{c}_{m}" for c in branches.controls() for m in rundir.CONTROL_CSV_METRICS}
    try:
        with open(path, "rb") as f:
            rows = list(csv.reader(io.StringIO(f.read().decode("utf-8"))))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise corrupt(path, f"is truncated or corrupted ({type(e).__name__})", _REBUILD) from e
    header = rows[0] if rows else []
    columns = list(rundir.CSV_COLUMNS)
    if header[: len(columns)] != columns or not set(header[len(columns):]) <= allowed:
        raise corrupt(path, f"is not a rounds table written by tf_lottery (columns {header[:8]})", _REBUILD)
    for row in rows[1:]:
        if len(row) != len(header) or not row[0].isdigit():
            raise corrupt(path, f"has a row that is not a round ({','.join(row)[:60]})", _REBUILD)


# -- loading -----------------------------------------------------------------------------------
def load_run(path: str) -> Run:
    """Read a run directory, finished or not, checking every file; what is absent becomes a note."""
    if not is_run_dir(path):
        raise ValueError(f"{path!r} is not a tf_lottery run directory (no summary.json or config.json)")
    run = rundir.RunDirectory(path)
    files = [name for name in ("config.json", "summary.json", "rounds.csv") if os.path.isfile(run.file(name))]
    record = _record(run) if "config.json" in files else None
    summary, experiment = _summary(run, record) if "summary.json" in files else (None, None)
    if "rounds.csv" in files:
        check_rounds_csv(run.file("rounds.csv"))
    if record is not None:
        experiment = record["experiment"]
    rounds = {int(r["round"]): dict(r, controls=dict(r.get("controls", {}))) for r in (summary or {}).get("rounds", [])}
    histories = _read_stages(run, rounds, files)
    sources = [d for d in (record, summary) if d]
    found = {key: next((d[key] for d in sources if d.get(key) is not None), None)
             for key in ("data_source", "data_fingerprint", "stop")}
    return Run(path=path, config=experiment.to_dict(), rounds=dict(sorted(rounds.items())), histories=histories,
               notes=_missing(path, experiment, rounds, histories, found["stop"]), experiment=experiment, files=files,
               data_source=found["data_source"] or {}, data_fingerprint=found["data_fingerprint"], stop=found["stop"])


def _read_stages(run: rundir.RunDirectory, rounds: dict[int, dict], files: list[str]) -> dict:
    """Every round_RR/<branch>.json: its history, and its metrics where the summary lacks them."""
    histories: dict[tuple[int, str], list[dict]] = {}
    for round_index in run.rounds_on_disk():
        for stage in STAGES:
            result = run.load_stage(round_index, stage)
            if result is None:
                continue
            files.append(os.path.relpath(run.stage_file(round_index, stage), run.path))
            histories[(round_index, stage)] = list(result["history"])
            metrics = {k: v for k, v in result.items() if k != "history"}
            # A stage that finished after the last summary (a round still running) still counts.
            if stage == branches.MAIN and round_index not in rounds:
                rounds[round_index] = dict(metrics, round=round_index, controls={})
            elif stage != branches.MAIN and round_index in rounds and stage not in rounds[round_index]["controls"]:
                rounds[round_index]["controls"][stage] = {k: v for k, v in metrics.items() if k != "layers"}
    return histories


def _missing(path: str, experiment, rounds: dict, histories: dict, stop: Optional[dict] = None) -> list[str]:
    expected_rounds = experiment.pruning.rounds
    if stop is not None:  # the search ended by itself: the rounds after it are not missing
        expected_rounds = min(expected_rounds, int(stop["after_round"]) + 1)
    controls = experiment.pruning.controls
    name = os.path.basename(os.path.normpath(path))
    notes = []
    absent = [r for r in range(expected_rounds) if r not in rounds]
    if absent:
        notes.append(f"{name}: rounds {_ranges(absent)} of {expected_rounds} not finished")
    for r, row in sorted(rounds.items()):
        for control in controls:
            if r > 0 and control not in row["controls"]:
                notes.append(f"{name}: round {r} {control} not finished")
        for stage in (branches.MAIN,) + tuple(row["controls"]):
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


# -- replicates and groups ---------------------------------------------------------------------
def _search_fields(run: Run) -> dict:
    """The fields that decide a search's results, but for those replicates may differ in."""
    fields = run.experiment.result_fields()
    return {k: json.loads(json.dumps(v, default=list)) for k, v in fields.items() if k not in REPLICATE_FIELDS}


def differing_fields(runs: Sequence[Run]) -> list[str]:
    """Result-deciding fields (by their one name, in config order) on which the runs do not all agree."""
    fields = [_search_fields(run) for run in runs]
    return [k for k in fields[0] if any(f.get(k) != fields[0][k] for f in fields[1:])] if fields else []


def consistency_notes(runs: Sequence[Run]) -> list[str]:
    """Replicates should differ only in their seed: name the config fields where they do not."""
    differing = differing_fields(runs)
    if not differing:
        return []
    return [f"runs differ in more than the seed ({', '.join(differing)}): their mean mixes different searches; "
            "lottery-report --compare draws them as separate series"]


def _shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(str(v) for v in value) or "none"
    return str(value)


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """The runs split into searches (replicates together), in order of first appearance, each
    labelled by the fields where the searches differ (`retrain=lr_rewind`, ...)."""
    keys: list[str] = []
    members: dict[str, list[Run]] = {}
    for run in runs:
        key = json.dumps(_search_fields(run), sort_keys=True)
        if key not in members:
            keys.append(key)
            members[key] = []
        members[key].append(run)
    groups = [members[k] for k in keys]
    fields = differing_fields([g[0] for g in groups])
    return [Group(", ".join(f"{k}={_shown(_search_fields(g[0])[k])}" for k in fields), g) for g in groups]
