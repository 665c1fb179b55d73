"""What a deployment meets: TFLite keeps a block ticket's 1x4 encoding, the serving benchmark measures every
export kind side by side, and lottery-report --serving draws accuracy against its measured latency."""

import json
import os
import subprocess
import sys

import pytest

from tf_lottery import export
from tf_lottery.report import serving as report_serving

from export_helpers import make_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_LOTTERY_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2")


def test_tflite_keeps_a_block_tickets_1x4_encoding_and_a_weight_tickets_random_one(tmp_path):
    block = make_run(str(tmp_path / "block"), rounds=3, rate=0.6, granularity="block")
    result = export.export_ticket(block.output_dir, str(tmp_path / "serving_block"), round="last", tflite=True)
    sparse = result.verification.tflite_sparse
    assert result.verification.ok and sparse
    assert {tuple(t["shape"]): t["block"] for t in sparse.values()}[(300, 784)] == [1, 4]  # [out, in]: along inputs
    assert "in 1x4 blocks" in result.verification.report()
    weight = make_run(str(tmp_path / "weight"), rounds=3, rate=0.6)
    result = export.export_ticket(weight.output_dir, str(tmp_path / "serving_weight"), round="last", tflite=True)
    assert all(t["block"] == [1, 1] for t in result.verification.tflite_sparse.values())


def _entry(granularity, round_index, kind, accuracy, b256, remaining=0.5):
    return {"granularity": granularity, "round": round_index, "kind": kind, "weights_remaining": remaining,
            "accuracy": accuracy, "reinit_accuracy": [a - 0.01 for a in accuracy], "b1_us": 100.0, "b256_us": b256,
            "size_bytes": 1000, "b1_vs_dense": 1.0, "b256_vs_dense": b256 / 1000.0, "size_vs_dense": 1.0, "seeds": len(accuracy)}


def test_goals_pick_the_fastest_export_within_half_a_point_and_a_point_of_dense():
    record = {"entries": [
        _entry("weight", 0, "dense", [0.880, 0.882], 1000.0, 1.0),
        _entry("unit", 1, "compact", [0.880, 0.879], 600.0),
        _entry("unit", 2, "compact", [0.878, 0.876], 300.0),  # mean 87.7: 0.4 below dense, fastest
        _entry("unit", 3, "compact", [0.872, 0.874], 150.0),  # 0.8 below: out at 0.5 points, in at 1
        _entry("weight", 1, "sparse", [0.860, 0.860], 900.0),  # every round too far below
    ]}
    goals = {(g["granularity"], g["kind"]): g["best"] for g in report_serving.goals(record)}
    assert goals[("unit", "compact")]["round"] == 2 and goals[("weight", "sparse")] is None
    text = report_serving.markdown(record)
    assert "unit / compact: round 2" in text and "weight / sparse: no round within 0.5 points" in text
    within_one = {(g["granularity"], g["kind"]): g["best"] for g in report_serving.goals(record, 0.01)}
    assert within_one[("unit", "compact")]["round"] == 3 and within_one[("weight", "sparse")] is None
    one_point = text.split("## Reaching dense accuracy minus 1 point, fastest at batch 256")[1]
    assert "unit / compact: round 3" in one_point and "weight / sparse: no round within 1 point of dense" in one_point
    assert text.count("\n| ") == 6  # the header and one row per export


def test_searches_of_other_seed_counts_hold_each_ticket_against_its_own_dense_network():
    # unit: 1 seed whose dense network reached 88.0; unit_3: 3 seeds, dense 87.0 on average (the dense row).
    one = dict(_entry("unit", 1, "compact", [0.876], 300.0), dense_accuracy=[0.880])
    three = dict(_entry("unit_3", 1, "compact", [0.866, 0.868, 0.867], 300.0), dense_accuracy=[0.868, 0.870, 0.872])
    record = {"entries": [_entry("unit_3", 0, "dense", [0.868, 0.870, 0.872], 1000.0, 1.0), one, three]}
    goals = {(g["granularity"], g["kind"]): g["best"] for g in report_serving.goals(record)}
    # 87.6 is 0.4 below its own dense 88.0 (in), though 0.6 above the dense row; 86.7 is 0.3 below 87.0 (in).
    assert goals[("unit", "compact")] is one and goals[("unit_3", "compact")] is three
    strict = {(g["granularity"], g["kind"]): g["best"] for g in report_serving.goals(record, 0.0035)}
    assert strict[("unit", "compact")] is None and strict[("unit_3", "compact")] is three
    text = report_serving.markdown(record)
    assert "accuracy 87.60 vs dense 88.00" in text and "accuracy 86.70 vs dense 87.00" in text
    assert "over each search's seeds (unit 1, unit_3 3; the dense row 3)" in text
    same = report_serving.markdown({"entries": [record["entries"][0], three]})
    assert "over 3 seed(s)" in same


def test_a_bad_serving_file_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot be read as the JSON of benchmarks/serving_latency.py"):
        report_serving.load(str(bad))
    bad.write_text(json.dumps({"entries": [_entry("unit", 1, "compact", [0.8], 1.0)]}))
    with pytest.raises(ValueError, match="has no round 0"):
        report_serving.load(str(bad))


def test_the_benchmark_measures_every_kind_and_lottery_report_draws_its_frontier(tmp_path):
    unit = make_run(str(tmp_path / "unit"), rounds=2, rate=0.5, granularity="unit")
    weight = make_run(str(tmp_path / "weight"), rounds=2, rate=0.5)
    out = tmp_path / "serving.json"
    bench = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "serving_latency.py"),
                            f"--runs=unit_half={unit.output_dir},weight={weight.output_dir}", f"--out={out}",
                            f"--work_dir={tmp_path / 'exports'}", "--blocks=1", "--calls=2", "--memory"],
                           capture_output=True, text=True, env=ENV, timeout=600)
    assert bench.returncode == 0, bench.stderr[-3000:]
    record = json.loads(out.read_text())
    kinds = {(e["granularity"], e["round"], e["kind"]) for e in record["entries"]}
    # A label names the search; its run's own granularity (unit) decides what it is exported as.
    assert record["granularities"] == {"unit_half": "unit", "weight": "weight"}
    assert {("unit_half", 1, "compact"), ("weight", 1, "dense"), ("weight", 1, "sparse"), ("weight", 1, "compact"),
            ("weight", 1, "tflite"), ("unit_half", 1, "tflite")} <= kinds
    assert ("unit_half", 1, "sparse") not in kinds
    assert sum(1 for k in kinds if k[1] == 0) == 2  # the dense network once, as a SavedModel and a TFLite file
    dense = next(e for e in record["entries"] if e["round"] == 0 and e["kind"] == "dense")
    assert record["entries"][0]["round"] == 0  # the dense rows first
    for entry in record["entries"]:  # each ticket carries its own search's dense accuracies
        assert entry["round"] == 0 or entry["dense_accuracy"] == dense["accuracy"] == [
            json.load(open(os.path.join(unit.output_dir, "summary.json")))["rounds"][0]["early_stop_test_accuracy"]]
    for entry in record["entries"]:
        assert entry["b1_us"] > 0 and entry["b256_us"] > 0 and entry["size_bytes"] > 0 and "peak_mb" in entry
    compact = next(e for e in record["entries"] if e["kind"] == "compact" and e["granularity"] == "unit_half")
    assert compact["kernel_shapes"]["fc1"] == [784, 150]
    by_key = {(e["granularity"], e["round"], e["kind"]): e for e in record["entries"]}
    unit_tflite = by_key[("unit_half", 1, "tflite")]  # converted from the compact export: the smaller network
    assert unit_tflite["tflite_from"] == "compact" and by_key[("weight", 1, "tflite")]["tflite_from"] == "dense"
    dense_tflite = next(e for e in record["entries"] if e["round"] == 0 and e["kind"] == "tflite")
    assert unit_tflite["size_bytes"] < 0.6 * dense_tflite["size_bytes"]
    report = subprocess.run([sys.executable, "-m", "tf_lottery.cli.report", f"--serving={out}",
                             f"--out={tmp_path / 'report'}"], capture_output=True, text=True, env=ENV, timeout=300)
    assert report.returncode == 0, report.stderr[-2000:]
    text = (tmp_path / "report" / "report.md").read_text()
    assert (tmp_path / "report" / "frontier.png").stat().st_size > 10_000
    assert "| unit_half | 1 | compact |" in text and "784x150 150x50 50x10" in text and "Measured with:" in text
    refused = subprocess.run([sys.executable, "-m", "tf_lottery.cli.report", f"--serving={tmp_path / 'none.json'}",
                              f"--out={tmp_path / 'r2'}"], capture_output=True, text=True, env=ENV, timeout=300)
    errors = [line for line in refused.stderr.splitlines() if line.startswith("lottery-report: error:")]
    assert refused.returncode != 0 and len(errors) == 1 and not (tmp_path / "r2").exists()
