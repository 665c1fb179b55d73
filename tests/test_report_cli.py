"""lottery-report refuses what is not a sound tf_lottery run, and destinations it cannot write, in one line.

Every refusal is checked the same way: exit status 1, exactly one line on stderr naming the
problem, and nothing written (neither --out nor --data_out exists afterwards).
"""

import contextlib
import json
import os
import subprocess

import pytest

from report_fixtures import lottery_report, make_run


def assert_refused(capsys, tmp_path, run_dir, *extra, names=""):
    out, data_out = tmp_path / "out", tmp_path / "data_out"
    status, err, _ = lottery_report(capsys, f"--run_dir={run_dir}", f"--out={out}", f"--data_out={data_out}", *extra)
    assert status == 1
    assert len(err) == 1 and err[0].startswith("lottery-report: error: "), err
    assert names in err[0]
    assert not out.exists() and not data_out.exists()
    return err[0]


@pytest.fixture
def run(tmp_path):
    return make_run(str(tmp_path / "run"), [0.80, 0.84, 0.86])


def test_a_sound_run_is_reported_and_copied(capsys, tmp_path, run):
    status, err, out = lottery_report(capsys, f"--run_dir={run}", f"--out={tmp_path / 'out'}",
                                      f"--data_out={tmp_path / 'data'}")
    assert (status, err) == (0, [])
    assert "report of 1 run(s)" in out and "copied 10 data files" in out
    copied = sorted(os.path.relpath(os.path.join(d, f), tmp_path / "data")
                    for d, _, files in os.walk(tmp_path / "data") for f in files)
    assert copied == ["config.json", "round_00/main.json", "round_01/main.json", "round_01/random_prune.json",
                      "round_01/random_reinit.json", "round_02/main.json", "round_02/random_prune.json",
                      "round_02/random_reinit.json", "rounds.csv", "summary.json"]


@pytest.mark.parametrize("record", [
    {"name": "bert", "hidden_size": 768},  # no 'config' object
    {"config": {}, "fingerprint": "1"},  # a config of nothing: every field would be a default
    {"config": {"model": {"model": "resnet50"}}, "fingerprint": "sha256:abc"},
], ids=["no_config", "empty_config", "partial_config"])
def test_config_json_of_another_tool_is_refused(capsys, tmp_path, record):
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps(record))
    line = assert_refused(capsys, tmp_path, other, names=str(other / "config.json"))
    assert "not a tf_lottery run record" in line


def test_summary_json_of_another_tool_is_refused(capsys, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "summary.json").write_text(json.dumps({"config": {"lr": 0.1}, "rounds": []}))
    assert_refused(capsys, tmp_path, other, names=str(other / "summary.json"))


def test_summary_of_another_run_beside_config_is_refused(capsys, tmp_path, run):
    other = make_run(str(tmp_path / "other"), [0.8, 0.8, 0.8], fc_rate=0.3)
    os.replace(os.path.join(other, "summary.json"), os.path.join(run, "summary.json"))
    line = assert_refused(capsys, tmp_path, run, names=os.path.join(run, "summary.json"))
    assert "fingerprint" in line


def _extra_history_key(path):
    result = json.loads(open(path).read())
    result["history"][1]["learning_rate"] = 0.1
    return json.dumps(result)


@pytest.mark.parametrize("relative, content", [
    ("config.json", lambda path: json.dumps({"config": []})),
    ("round_01/main.json", lambda path: "{}"),
    ("summary.json", lambda path: "{}"),
    ("round_02/random_reinit.json", _extra_history_key),
    ("round_01/main.json", lambda path: '{"test_accuracy": 0.9'),  # truncated
    ("rounds.csv", lambda path: "not,a\nrounds,table,at all\n"),
], ids=["config_list", "main_empty", "summary_empty", "history_extra_key", "main_truncated", "rounds_csv"])
def test_structurally_wrong_file_is_named_in_one_line(capsys, tmp_path, run, relative, content):
    path = os.path.join(run, relative)
    text = content(path)
    with open(path, "w") as f:
        f.write(text)
    assert_refused(capsys, tmp_path, run, names=path)


def test_out_that_is_a_file_is_refused(capsys, tmp_path, run):
    blocker = tmp_path / "out"
    blocker.write_text("mine")
    status, err, _ = lottery_report(capsys, f"--run_dir={run}", f"--out={blocker}", f"--data_out={tmp_path / 'd'}")
    assert status == 1 and len(err) == 1 and err[0].startswith("lottery-report: error: ")
    assert str(blocker) in err[0]
    assert blocker.read_text() == "mine" and not (tmp_path / "d").exists()


def test_data_out_that_is_a_file_writes_no_report(capsys, tmp_path, run):
    blocker = tmp_path / "data_out"
    blocker.write_text("mine")
    status, err, _ = lottery_report(capsys, f"--run_dir={run}", f"--out={tmp_path / 'out'}", f"--data_out={blocker}")
    assert status == 1 and len(err) == 1 and str(blocker) in err[0]
    assert blocker.read_text() == "mine" and not (tmp_path / "out").exists()


@contextlib.contextmanager
def read_only(path):
    """Make a directory unwritable: chmod for a normal user, the immutable attribute for root."""
    if os.geteuid() != 0:
        os.chmod(path, 0o555)
        try:
            yield
        finally:
            os.chmod(path, 0o755)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root where chattr +i is not allowed: no way to make a directory read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize("inside", [False, True], ids=["out_read_only", "out_under_read_only_parent"])
def test_read_only_out_is_refused(capsys, tmp_path, run, inside):
    locked = tmp_path / "locked"
    locked.mkdir()
    out = locked / "report" if inside else locked
    with read_only(locked):
        status, err, _ = lottery_report(capsys, f"--run_dir={run}", f"--out={out}")
        assert status == 1 and len(err) == 1 and err[0].startswith("lottery-report: error: cannot write ")
        assert "check the permissions" in err[0] or "read-only" in err[0]
        assert os.listdir(locked) == []


def test_read_only_data_out_writes_no_report(capsys, tmp_path, run):
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked):
        status, err, _ = lottery_report(capsys, f"--run_dir={run}", f"--out={tmp_path / 'out'}",
                                        f"--data_out={locked / 'data'}")
        assert status == 1 and len(err) == 1 and str(locked) in err[0]
        assert os.listdir(locked) == [] and not (tmp_path / "out").exists()
