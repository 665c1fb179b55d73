"""lottery-report --compare: searches that differ in more than the seed as separate series (issue 12).

Fixture runs (report_fixtures.make_run): the ticket's early-stop accuracy at round r is
accuracies[r] + 0.01; random_reinit is accuracies[r] - 0.1 from round 1; weights remaining are
100, 80, 64 percent. The numbers checked below follow from those by hand.
"""

import json
import os

import numpy as np
import pytest

from report_fixtures import lottery_report, make_run
from tf_lottery.report import writer as report, data as report_data, plots as report_plots


@pytest.fixture
def retrain_modes(tmp_path):
    """Issue 12's first figure: weight rewinding (two seeds in one parent), LR rewinding, fine-tuning."""
    make_run(str(tmp_path / "weight_rewind" / "seed_0"), [0.80, 0.84, 0.86], seed=0)
    make_run(str(tmp_path / "weight_rewind" / "seed_1"), [0.82, 0.86, 0.90], seed=1)
    make_run(str(tmp_path / "lr_rewind"), [0.70, 0.75, 0.78], retrain="lr_rewind")
    make_run(str(tmp_path / "finetune"), [0.60, 0.65, 0.66], retrain="finetune", controls=())
    return [str(tmp_path / name) for name in ("weight_rewind", "lr_rewind", "finetune")]


def test_groups_are_searches_labelled_by_the_fields_that_differ(retrain_modes):
    groups = report.group_runs(report.load_runs(retrain_modes))
    assert [g.label for g in groups] == ["retrain=weight_rewind", "retrain=lr_rewind", "retrain=finetune"]
    assert [[os.path.basename(r.path) for r in g.runs] for g in groups] == [["seed_0", "seed_1"], ["lr_rewind"],
                                                                              ["finetune"]]


def test_compare_curves_average_replicates_within_a_search(retrain_modes):
    groups = report.group_runs(report.load_runs(retrain_modes))
    data = report.compare_curves(groups, ["main", "random_reinit"])
    assert list(data) == ["compare/retrain=weight_rewind/main", "compare/retrain=weight_rewind/random_reinit",
                          "compare/retrain=lr_rewind/main", "compare/retrain=lr_rewind/random_reinit",
                          "compare/retrain=finetune/main"]  # fine-tuning ran without controls
    rewind = data["compare/retrain=weight_rewind/main"]
    assert rewind.label == "retrain=weight_rewind"
    np.testing.assert_allclose(rewind.x, [100.0, 80.0, 64.0])
    np.testing.assert_allclose(rewind.mean, [0.82, 0.86, 0.89])
    np.testing.assert_allclose(rewind.low, [0.81, 0.85, 0.87])
    np.testing.assert_allclose(rewind.high, [0.83, 0.87, 0.91])
    np.testing.assert_array_equal(rewind.count, [2, 2, 2])
    np.testing.assert_allclose(data["compare/retrain=lr_rewind/main"].mean, [0.71, 0.76, 0.79])
    np.testing.assert_allclose(data["compare/retrain=finetune/main"].mean, [0.61, 0.66, 0.67])
    reinit = data["compare/retrain=weight_rewind/random_reinit"]
    assert reinit.label == "retrain=weight_rewind, random reinit"
    np.testing.assert_allclose(reinit.x, [80.0, 64.0])
    np.testing.assert_allclose(reinit.mean, [0.75, 0.78])


def test_compare_report_writes_figure_table_and_numbers(capsys, tmp_path, retrain_modes):
    out = tmp_path / "out"
    status, err, stdout = lottery_report(capsys, *(f"--run_dir={d}" for d in retrain_modes), f"--out={out}",
                                         "--compare", "--branches=main,random_reinit")
    assert (status, err) == (0, [])
    assert sorted(os.listdir(out)) == ["compare.png", "curves.json", "report.md"]
    with open(out / "compare.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    written = json.loads((out / "curves.json").read_text())
    assert written["compare/retrain=lr_rewind/main"]["mean"] == pytest.approx([0.71, 0.76, 0.79])
    assert "missing: retrain=finetune: no finished random_reinit network" in stdout

    text = (out / "report.md").read_text()
    assert "runs differ in more than the seed" not in text  # that is the point here
    header = [line for line in text.splitlines() if line.startswith("| Round | Weights remaining % |")][0]
    assert header == ("| Round | Weights remaining % | retrain=weight_rewind early-stop acc % | "
                      "retrain=weight_rewind, random reinit early-stop acc % | retrain=lr_rewind early-stop acc % | "
                      "retrain=lr_rewind, random reinit early-stop acc % | retrain=finetune early-stop acc % |")
    assert "| 2 | 64.00 | 89.00 (87.00-91.00) | 78.00 (76.00-80.00) | 79.00 | 68.00 | 67.00 |" in text
    assert "| 0 | 100.00 | 82.00 (81.00-83.00) | - | 71.00 | - | 61.00 |" in text
    assert "## Rounds: retrain=lr_rewind" in text and "![" in text and "(compare.png)" in text


def test_at_init_methods_against_imp_with_sanity_checks(tmp_path):
    """Issue 12's second figure: IMP tickets, methods that prune at initialization, and their
    random_reinit/random_prune branches; labels name every field that differs, in config order."""
    make_run(str(tmp_path / "imp"), [0.80, 0.84, 0.86])
    for i, strategy in enumerate(("snip", "grasp", "synflow", "magnitude_init", "random")):
        make_run(str(tmp_path / strategy), [0.79 - 0.01 * i] * 3, pruning_strategy=strategy, schedule="one_shot")
    runs = report.load_runs([str(tmp_path / name) for name in
                             ("imp", "snip", "grasp", "synflow", "magnitude_init", "random")])
    groups = report.group_runs(runs)
    assert [g.label for g in groups][:2] == ["pruning_strategy=magnitude, schedule=iterative",
                                             "pruning_strategy=snip, schedule=one_shot"]
    data = report.compare_curves(groups, ["main", "random_reinit", "random_prune"])
    assert len(data) == 6 * 3
    prune = data["compare/pruning_strategy=snip, schedule=one_shot/random_prune"]
    assert prune.label == "pruning_strategy=snip, schedule=one_shot, random pruning"
    np.testing.assert_allclose(prune.mean, [0.59, 0.59])  # 0.79 - 0.2 at rounds 1 and 2
    out = str(tmp_path / "out")
    report.write_report([r.path for r in runs], out, compare=True, branches=["main", "random_reinit", "random_prune"])
    assert set(json.load(open(os.path.join(out, "curves.json")))) == set(data)


def test_searches_pruned_to_other_levels_are_compared_at_matched_sparsity(tmp_path):
    a = make_run(str(tmp_path / "a"), [0.80, 0.84, 0.86])
    b = make_run(str(tmp_path / "b"), [0.80, 0.83, 0.85], fc_rate=0.36, remaining=[1.0, 0.64, 0.4096])
    groups = report.group_runs(report.load_runs([a, b]))
    assert [g.label for g in groups] == ["fc_rate=0.2", "fc_rate=0.36"]
    text = report.comparison_table(groups)
    lines = text.splitlines()
    assert lines[0] == "| Weights remaining % | fc_rate=0.2 early-stop acc % | fc_rate=0.36 early-stop acc % |"
    assert lines[2:6] == [
        "| 100.00 | 81.00 | 81.00 |",
        # b at 80%: halfway between 100% (81) and 64% (84) on a log scale, since 1.25**2 = 1.5625
        "| 80.00 | 85.00 | 82.50* |",
        "| 64.00 | 87.00 | 84.00 |",
        "| 40.96 | - | 86.00 |",  # a stops at 64%: never extrapolated
    ]
    assert "interpolated" in text
    np.testing.assert_allclose(report.compare_curves(groups)["compare/fc_rate=0.36/main"].x, [100.0, 64.0, 40.96])


def test_value_at_is_measured_within_one_percent_and_else_log_linear():
    points = [(10.0, 0.5), (40.0, 0.9)]
    assert report_data.value_at(points, 10.05) == (0.5, False)
    value, interpolated = report_data.value_at(points, 20.0)
    assert interpolated and value == pytest.approx(0.7)  # 20 is the log midpoint of 10 and 40
    assert report_data.value_at(points, 5.0) == (None, False)
    assert report_data.value_at(points, 80.0) == (None, False)


def test_replicates_in_one_parent_still_average_and_one_search_compares_by_branch(tmp_path):
    make_run(str(tmp_path / "runs" / "seed_0"), [0.80, 0.84, 0.86], seed=0)
    make_run(str(tmp_path / "runs" / "seed_1"), [0.82, 0.86, 0.90], seed=1, controls=())
    groups = report.group_runs(report.load_runs([str(tmp_path / "runs")]))
    assert len(groups) == 1 and groups[0].label == "" and len(groups[0].runs) == 2
    data = report.compare_curves(groups, ["main", "random_prune"])
    assert data["compare/all runs/main"].label == "winning ticket"
    np.testing.assert_array_equal(data["compare/all runs/random_prune"].count, [1, 1])


def test_branches_need_compare_and_known_names(capsys, tmp_path, retrain_modes):
    out = tmp_path / "out"
    status, err, _ = lottery_report(capsys, f"--run_dir={retrain_modes[0]}", f"--out={out}", "--branches=main")
    assert status == 1 and err == [
        "lottery-report: error: --branches chooses the series of --compare; add --compare, or drop --branches"]
    status, err, _ = lottery_report(capsys, f"--run_dir={retrain_modes[0]}", f"--out={out}", "--compare",
                                    "--branches=main,random_reinti")
    assert status == 1 and err == [
        "lottery-report: error: unknown branch 'random_reinti' in branches=main,random_reinti; "
        "allowed: main, random_reinit, random_prune, sign_reinit, inverted"]
    assert not out.exists()


def test_tick_labels_of_nearly_equal_levels_are_drawn_once():
    # Searches pruned at the same rates reach levels a hair apart (80.04% and 80%): one tick.
    assert report_plots._ticks([100.0, 80.04, 80.0, 64.06, 64.0, 51.2]) == [100.0, 80.04, 64.06, 51.2]
    assert report_plots._ticks([100.0 * 0.8 ** r for r in range(18)]) == [100.0 * 0.8 ** r for r in range(0, 18, 3)]


def test_data_out_of_a_comparison_keeps_each_searchs_replicates_apart(tmp_path, retrain_modes):
    data_out = tmp_path / "data"
    report.write_report(retrain_modes, str(tmp_path / "out"), compare=True, data_out=str(data_out))
    assert sorted(p.parent.relative_to(data_out).as_posix() for p in data_out.rglob("config.json")) == [
        "finetune", "lr_rewind", "weight_rewind/seed_0", "weight_rewind/seed_1"]
    again = report.group_runs(report.load_runs([str(data_out / n) for n in ("weight_rewind", "lr_rewind", "finetune")]))
    assert [len(g.runs) for g in again] == [2, 1, 1]
    assert (report.comparison_table(again) ==
            report.comparison_table(report.group_runs(report.load_runs(retrain_modes))))
