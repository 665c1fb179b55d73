"""Report data (the numbers behind each curve), partial runs, the CLI, progress output and replicates."""

import glob
import io
import json
import os

import numpy as np
import pytest

import tf_lottery  # noqa: F401  (legacy Keras before TF)
from report_fixtures import make_run, make_version_1_summary_only
from tf_lottery.report import writer as report
from tf_lottery.search.progress import Progress


@pytest.fixture
def replicates(tmp_path):
    parent = tmp_path / "runs"
    make_run(str(parent / "seed_0"), [0.80, 0.84, 0.86], seed=0)
    make_run(str(parent / "seed_1"), [0.82, 0.86, 0.90], seed=1)
    return str(parent)


def test_curves_average_replicates_with_min_max(replicates):
    runs = report.load_runs([replicates])
    assert [os.path.basename(r.path) for r in runs] == ["seed_0", "seed_1"]
    data = report.curves(runs)

    main = data["test_accuracy/main"]
    np.testing.assert_allclose(main.x, [100.0, 80.0, 64.0])
    np.testing.assert_allclose(main.mean, [0.81, 0.85, 0.88])
    np.testing.assert_allclose(main.low, [0.80, 0.84, 0.86])
    np.testing.assert_allclose(main.high, [0.82, 0.86, 0.90])
    np.testing.assert_array_equal(main.count, [2, 2, 2])
    np.testing.assert_allclose(data["early_stop_test_accuracy/main"].mean, [0.82, 0.86, 0.89])
    np.testing.assert_allclose(data["early_stop_iteration/main"].mean, [100, 200, 300])

    # Controls exist from round 1 on, as separate curves.
    reinit = data["early_stop_test_accuracy/random_reinit"]
    np.testing.assert_allclose(reinit.x, [80.0, 64.0])
    np.testing.assert_allclose(reinit.mean, [0.75, 0.78])
    np.testing.assert_allclose(reinit.low, [0.74, 0.76])
    prune = data["test_accuracy/random_prune"]
    np.testing.assert_allclose(prune.mean, [0.65, 0.68])
    np.testing.assert_allclose(data["early_stop_iteration/random_prune"].mean, [300, 300])

    # Per-layer weights remaining per round.
    np.testing.assert_allclose(data["layers/out"].x, [0, 1, 2])
    np.testing.assert_allclose(data["layers/out"].mean, [100.0, 90.0, 81.0])
    np.testing.assert_allclose(data["layers/all"].mean, [100.0, 80.0, 64.0])


def test_training_curves_at_levels_nearest_the_asked_ones(replicates):
    runs = report.load_runs([replicates])
    data = report.curves(runs, levels=(100.0, 70.0, 60.0))
    # 70% is nearest 64% on a log scale (|log 70/64| < |log 80/70|); 60% maps to it too, drawn once.
    assert sorted(k for k in data if k.startswith("history/main/")) == ["history/main/round_00", "history/main/round_02"]
    curve = data["history/main/round_02"]
    np.testing.assert_allclose(curve.x, [100, 200, 300])
    np.testing.assert_allclose(curve.mean, [0.86, 0.87, 0.88])
    np.testing.assert_allclose(curve.low, [0.84, 0.85, 0.86])
    np.testing.assert_allclose(data["history/random_reinit/round_02"].mean, [0.76, 0.77, 0.78])
    assert "history/random_reinit/round_00" not in data  # no control at the dense round


def test_choose_rounds():
    levels = {0: 100.0, 1: 80.0, 2: 64.0, 3: 51.2, 4: 41.0}
    assert report.choose_rounds(levels, (100, 51.3, 21.1)) == [0, 3, 4]
    assert report.choose_rounds({}, (100,)) == []


def test_partial_run_draws_what_exists_and_names_what_is_missing(tmp_path):
    path = make_run(str(tmp_path / "partial"), [0.80, 0.84, 0.86], rounds_in_summary=2, rounds=5, extra_main=[2])
    run = report.load_run(path)
    assert sorted(run.rounds) == [0, 1, 2]
    data = report.curves([run])
    np.testing.assert_allclose(data["test_accuracy/main"].mean, [0.80, 0.84, 0.86])
    np.testing.assert_allclose(data["test_accuracy/random_reinit"].x, [80.0])
    assert "partial: rounds 3-4 of 5 not finished" in run.notes
    assert "partial: round 2 random_reinit not finished" in run.notes
    assert "partial: round 2 random_prune not finished" in run.notes

    out = str(tmp_path / "report")
    result = report.write_report([path], out)
    text = open(os.path.join(out, "report.md")).read()
    assert "## Missing" in text and "rounds 3-4 of 5 not finished" in text
    assert sorted(os.path.basename(f) for f in glob.glob(os.path.join(out, "*.png"))) == [
        "accuracy.png", "early_stop.png", "layers.png", "training.png"]
    assert result.notes == run.notes


def test_missing_history_files_are_noted_and_summary_alone_suffices(tmp_path):
    path = make_run(str(tmp_path / "run"), [0.80, 0.84, 0.86])
    os.remove(os.path.join(path, "round_01", "main.json"))
    run = report.load_run(path)
    assert "run: round 1 main has no evaluation history (round_01/main.json missing)" in run.notes
    data = report.curves([run], levels=(80.0,))
    np.testing.assert_allclose(data["test_accuracy/main"].mean, [0.80, 0.84, 0.86])  # from summary.json
    assert not [k for k in data if k.startswith("history/main/round_01")]


def test_written_report_matches_curves_and_table(replicates, tmp_path):
    out = str(tmp_path / "report")
    result = report.write_report([replicates], out, command="lottery-report --run_dir=x")
    written = json.load(open(os.path.join(out, "curves.json")))
    expected = report.curves(report.load_runs([replicates]))
    assert set(written) == set(expected)
    np.testing.assert_allclose(written["early_stop_test_accuracy/random_prune"]["mean"],
                               expected["early_stop_test_accuracy/random_prune"].mean)
    text = open(os.path.join(out, "report.md")).read()
    # Round 2: ticket early-stop accuracy mean 89.00 (87.00-91.00), early stop at 300 on both seeds.
    row = [line for line in text.splitlines() if line.startswith("| 2 |")][0]
    assert "| 64.00 | 89.00 (87.00-91.00) | 88.00 (86.00-90.00) | 300 (300-300) |" in row
    assert row.endswith("| 2 |")
    assert "lottery-report --run_dir=x" in text and "## Missing" not in text
    for png in ("accuracy.png", "early_stop.png", "training.png", "layers.png"):
        with open(os.path.join(out, png), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert result.runs == [os.path.join(replicates, "seed_0"), os.path.join(replicates, "seed_1")]


def test_export_data_copies_what_the_report_needs(replicates, tmp_path):
    dest = str(tmp_path / "data")
    written = report.export_data([replicates], dest)
    relative = sorted(os.path.relpath(p, dest) for p in written)
    assert len(relative) == 2 * 10 and "seed_1/rounds.csv" in relative
    for path in relative:
        with open(os.path.join(replicates, path), "rb") as a, open(os.path.join(dest, path), "rb") as b:
            assert a.read() == b.read()
    a = report.curves(report.load_runs([replicates]))
    b = report.curves(report.load_runs([dest]))
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_allclose(a[key].mean, b[key].mean)


def test_replicates_differing_in_more_than_seed_are_flagged(tmp_path):
    a = make_run(str(tmp_path / "a"), [0.8, 0.8, 0.8])
    b = make_run(str(tmp_path / "b"), [0.8, 0.8, 0.8], fc_rate=0.3, seed=1)
    notes = report.consistency_notes(report.load_runs([a, b]))
    assert len(notes) == 1 and "(fc_rate)" in notes[0] and "--compare" in notes[0]
    # More rounds extend a search, other controls train beside the same ticket: still replicates.
    c = make_run(str(tmp_path / "c"), [0.8, 0.8, 0.8, 0.8], rounds=4, rounds_in_summary=4, controls=(), seed=2)
    assert report.consistency_notes(report.load_runs([a, c])) == []


def test_version_1_summary_alone_is_read_in_todays_names(tmp_path):
    path = make_version_1_summary_only(str(tmp_path / "old"), [0.80, 0.84, 0.86])
    run = report.load_run(path)
    assert run.config["model"]["model"] == "lenet_300_100" and run.config["pruning"]["pruning_scope"] == "layerwise"
    assert run.config["pruning"]["retrain"] == "weight_rewind"  # what version 1 always did
    assert run.files == ["summary.json"]
    np.testing.assert_allclose(report.curves([run])["test_accuracy/main"].mean, [0.80, 0.84, 0.86])


@pytest.mark.parametrize("name", ["lenet_fashion_mnist", "lenet_fashion_mnist_10_epochs"])
def test_checked_in_reports_are_redrawn_from_their_version_1_data(name):
    """The data/ folders were written before version 2 (config keys model.name, pruning.scope)."""
    folder = os.path.join(os.path.dirname(__file__), os.pardir, "reports", name)
    runs = report.load_runs([os.path.join(folder, "data")])
    assert all(run.notes == [] and run.experiment.model.model == "lenet_300_100" for run in runs)
    data = report.curves(runs)
    with open(os.path.join(folder, "curves.json")) as f:
        checked_in = json.load(f)
    assert set(data) == set(checked_in)
    for key, series in data.items():
        for field in ("x", "mean", "low", "high", "count"):
            np.testing.assert_allclose(getattr(series, field), checked_in[key][field], err_msg=f"{key} {field}")
    with open(os.path.join(folder, "report.md")) as f:
        assert report.table(runs) in f.read()


def test_not_a_run_is_one_line_error(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    with pytest.raises(ValueError, match="is not a tf_lottery run directory") as e:
        report.find_runs([str(empty)])
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="does not exist"):
        report.find_runs([str(tmp_path / "nope")])


def test_cli_errors_in_one_line_and_writes_report(replicates, tmp_path, capsys):
    from report_fixtures import lottery_report

    status, err, _ = lottery_report(capsys, f"--run_dir={tmp_path}", f"--out={tmp_path / 'r'}")
    assert status == 1 and len(err) == 1 and err[0].startswith("lottery-report: error: ")

    status, err, _ = lottery_report(capsys, f"--run_dir={replicates}", f"--out={tmp_path / 'r'}", "--levels=100,abc")
    assert status == 1 and "--levels=100,abc must be numbers" in err[0]

    status, _, out = lottery_report(capsys, f"--run_dir={replicates}", f"--out={tmp_path / 'r'}",
                                    f"--data_out={tmp_path / 'd'}")
    assert status == 0 and "report of 2 run(s)" in out
    assert os.path.isfile(tmp_path / "r" / "accuracy.png")
    assert os.path.isfile(tmp_path / "d" / "seed_0" / "summary.json")


class _Eval:
    def __init__(self, iteration, loss=0.5):
        self.iteration, self.train_loss, self.validation_loss, self.test_accuracy = iteration, loss, 0.4, 0.9


def test_progress_when_piped_prints_one_line_per_quarter():
    stream = io.StringIO()
    progress = Progress("normal", stream=stream, is_tty=False)
    progress.begin(3, "main", 0, 1000)
    for it in range(100, 1001, 100):
        progress.update(_Eval(it))
    progress.end()
    lines = stream.getvalue().splitlines()
    assert [line.split("]")[1].split()[0] for line in lines] == ["300/1000", "500/1000", "800/1000", "1000/1000"]
    assert lines[-1].startswith("round  3 main") and "100% | loss 0.5000" in lines[-1]


def test_progress_on_a_terminal_redraws_one_line_and_clears_it():
    stream = io.StringIO()
    progress = Progress("normal", stream=stream, is_tty=True)
    progress.begin(0, "random_prune", 500, 1000)  # resumed half way
    progress.update(_Eval(600))
    progress.update(_Eval(1000))
    progress.end()
    text = stream.getvalue()
    assert "\n" not in text and text.count("\r") == 3 and text.endswith("\r\033[K")
    assert "600/1000" in text and "[" + "#" * 24 + "]" in text


def test_progress_quiet_and_verbose():
    quiet, verbose = io.StringIO(), io.StringIO()
    for stream, mode in ((quiet, "quiet"), (verbose, "verbose")):
        progress = Progress(mode, stream=stream, is_tty=True)
        progress.begin(1, "main", 0, 200)
        progress.update(_Eval(100))
        progress.update(_Eval(200))
        progress.end()
    assert quiet.getvalue() == ""
    lines = verbose.getvalue().splitlines()
    assert len(lines) == 2 and "val loss 0.4000" in lines[1] and "test acc 0.9000" in lines[1]
    with pytest.raises(ValueError, match="unknown progress mode 'loud'"):
        Progress("loud")


def test_replicate_runs_give_each_seed_its_own_directory():
    from cli_runner import load_cli
    from tf_lottery import config as C

    replicate_runs = load_cli("find").replicate_runs

    config = C.ExperimentConfig(runtime=C.RuntimeConfig(seed=7))
    assert replicate_runs(config, "out", 1) == [(config, "out")]
    runs = replicate_runs(config, "out", 3)
    assert [(c.runtime.seed, d) for c, d in runs] == [(7, "out/seed_7"), (8, "out/seed_8"), (9, "out/seed_9")]
    assert all(c.training == config.training for c, _ in runs)
    with pytest.raises(ValueError, match="replicates=0"):
        replicate_runs(config, "out", 0)


def test_real_replicates_report_and_tensorboard_scalars(tmp_path):
    """Two tiny real searches: progress lines, the report's data equal to the runs' own numbers, and
    TensorBoard round scalars for the controls."""
    import dataclasses

    import tensorflow as tf

    from tf_lottery import config as C
    from tf_lottery.data import datasets as data_lib
    from tf_lottery.cli.find import replicate_runs

    splits = data_lib.load("fashion_mnist")
    n = 1200
    small = dataclasses.replace(
        splits, train_images=splits.train_images[:n], train_labels=splits.train_labels[:n],
        validation_images=splits.validation_images[:500], validation_labels=splits.validation_labels[:500],
        test_images=splits.test_images[:500], test_labels=splits.test_labels[:500])
    cfg = tf_lottery.from_preset("lenet_300_100", "fast")
    cfg = dataclasses.replace(
        cfg, training=dataclasses.replace(cfg.training, iterations=40, eval_every=20, checkpoint_every=0),
        pruning=dataclasses.replace(cfg.pruning, rounds=2, controls=("random_reinit",)))
    parent = str(tmp_path / "runs")
    tickets, stream = [], io.StringIO()
    for run_config, output_dir in replicate_runs(cfg, parent, 2):
        tickets.append(tf_lottery.find_ticket(config=run_config, splits=small, output_dir=output_dir,
                                              log=lambda line: None,
                                              progress=Progress("normal", stream=stream, is_tty=False)))
    # 2 runs x (2 mains + 1 control) stages, each piped as lines at 50% and 100%.
    lines = stream.getvalue().splitlines()
    assert len(lines) == 12 and sum("random_reinit" in line for line in lines) == 4

    data = report.curves(report.load_runs([parent]))
    accuracies = np.array([[r["early_stop_test_accuracy"] for r in t.rounds] for t in tickets])
    np.testing.assert_allclose(data["early_stop_test_accuracy/main"].mean, accuracies.mean(axis=0))
    np.testing.assert_allclose(data["early_stop_test_accuracy/main"].high, accuracies.max(axis=0))
    reinit = [t.rounds[1]["controls"]["random_reinit"]["test_accuracy"] for t in tickets]
    np.testing.assert_allclose(data["test_accuracy/random_reinit"].mean, [np.mean(reinit)])
    np.testing.assert_allclose(data["history/main/round_01"].x, [20, 40])

    tags = set()
    for events in glob.glob(os.path.join(parent, "seed_0", "tensorboard", "rounds", "events*")):
        for record in tf.data.TFRecordDataset(events):
            event = tf.compat.v1.Event.FromString(record.numpy())
            tags.update(v.tag for v in event.summary.value)
    assert {"early_stop_test_accuracy", "random_reinit/early_stop_test_accuracy",
            "random_reinit/early_stop_iteration"} <= tags
