"""Plots and tables of ticket searches, drawn from the small files of their run directories alone.

`runs` reads and checks runs, `data` computes every number (pure functions), `plots` draws
them, `instability` adds the instability analysis's section, `writer` writes the report
(`write_report`) and `serving` the serving-latency page. Imports no TensorFlow. The public
names of `writer` are re-exported here:

    report.write_report(["runs/lenet3"], "reports/lenet3")
    report.curves(report.load_runs(["runs/lenet3"]))  # the numbers alone
"""

from tf_lottery.report.writer import (
    METRICS, PAPER_LEVELS, STAGE_LABELS, STAGES, Group, Report, Run, Series, choose_rounds, compare_curves, compare_key,
    comparison_table, consistency_notes, curves, differing_fields, export_data, find_runs, group_runs, is_run_dir,
    load_run, load_runs, matched_table, round_levels, table, write_report,
)

__all__ = [
    "METRICS", "PAPER_LEVELS", "Group", "Report", "Run", "STAGES", "STAGE_LABELS", "Series", "choose_rounds",
    "compare_curves", "compare_key", "comparison_table", "matched_table", "consistency_notes", "curves", "differing_fields",
    "export_data", "find_runs", "group_runs", "is_run_dir", "load_run", "load_runs", "round_levels", "table",
    "write_report",
]
