"""Where a run's data comes from: a --data_dir the user names must hold the dataset (never a silent
fallback to other data), and every run records its source (kind, path, files and sha256)."""

import hashlib
import json
import os
import shutil

import pytest

import tf_lottery  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TF loads)
from tf_lottery.data import datasets as data
from tf_lottery.report import writer as report
from tf_lottery.data.raw_files import DEBIAN_FASHION_MNIST_DIR, IDX_FILES

from cli_runner import run_find
from test_data import write_idx_set

TINY = ("--iterations=4", "--rounds=1", "--eval_every=4", "--batch_size=4", "--validation_size=2")


def _refused(tmp_path, data_dir, *expected):
    run = tmp_path / "run"
    code, out, err = run_find("--dataset=fashion_mnist", f"--data_dir={data_dir}", f"--output_dir={run}", *TINY)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, (out, err)
    assert len(lines) == 1 and lines[0].startswith(f"lottery-find: error: data_dir={str(data_dir)!r} "), err
    for text in expected:
        assert text in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    assert not run.exists()  # nothing written
    return lines[0]


def test_a_missing_data_dir_is_refused_in_one_line_and_writes_nothing(tmp_path):
    line = _refused(tmp_path, tmp_path / "mistyped", "does not exist", "train-images-idx3-ubyte[.gz]",
                    "or leave data_dir out")
    assert DEBIAN_FASHION_MNIST_DIR in line  # says what the fallback would have been


def test_an_empty_data_dir_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    _refused(tmp_path, tmp_path / "empty", "is empty, not 'fashion_mnist'", "fashion_mnist/3.0.1")


def test_a_data_dir_with_other_files_is_refused(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("my relabelled copy is elsewhere")
    (other / "data_batch_1.bin").write_bytes(b"\0" * 3073)
    _refused(tmp_path, other, "holds data_batch_1.bin, notes.txt, not 'fashion_mnist'")


def test_a_data_dir_with_part_of_the_files_is_refused_naming_what_lacks(tmp_path):
    partial = tmp_path / "partial"
    write_idx_set(partial)
    os.remove(partial / "t10k-labels-idx1-ubyte.gz")
    _refused(tmp_path, partial, "holds only part of 'fashion_mnist'", "lacks t10k-labels-idx1-ubyte")


def test_a_file_given_as_data_dir_is_refused(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"x")
    _refused(tmp_path, path, "is not a directory")


def test_a_valid_data_dir_is_used_and_recorded_with_each_files_sha256(tmp_path):
    own = tmp_path / "own" / "fashion-mnist"
    write_idx_set(own, train_count=12, test_count=4)
    run = tmp_path / "run"
    code, out, err = run_find("--dataset=fashion_mnist", f"--data_dir={tmp_path / 'own'}", f"--output_dir={run}", *TINY)
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith("tf_lottery: lenet_300_100 on fashion_mnist (IDX files in ") and f"{own}, data_dir)" in first
    for name in ("config.json", "summary.json"):
        source = json.loads((run / name).read_text())["data_source"]
        assert source["kind"] == "idx" and source["path"] == str(own) and source["chosen"] == "data_dir"
        assert [f["name"] for f in source["files"]] == [f + ".gz" for f in IDX_FILES]
        for entry in source["files"]:
            content = (own / entry["name"]).read_bytes()
            assert entry["sha256"] == hashlib.sha256(content).hexdigest() and entry["bytes"] == len(content)
    # The report says where the data came from, down to the files' digests.
    written = report.write_report([str(run)], str(tmp_path / "report"))
    text = (tmp_path / "report" / "report.md").read_text()
    assert written and f"- data: IDX files in {own}, data_dir; files train-images-idx3-ubyte.gz (sha256 " in text
    assert json.loads((run / "summary.json").read_text())["data_source"]["files"][0]["sha256"][:12] in text


def test_a_resume_from_a_moved_copy_of_the_same_data_keeps_the_recorded_source(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    write_idx_set(first, train_count=12, test_count=4)
    run = tmp_path / "run"
    assert run_find("--dataset=fashion_mnist", f"--data_dir={first}", f"--output_dir={run}", *TINY)[0] == 0
    shutil.copytree(first, second)
    shutil.rmtree(first)
    code, out, err = run_find("--dataset=fashion_mnist", f"--data_dir={second}", f"--output_dir={run}", *TINY)
    assert code == 0, err
    assert f"IDX files in {second}, data_dir" in out.splitlines()[0]  # the first line: this time's source
    assert json.loads((run / "config.json").read_text())["data_source"]["path"] == str(first)  # as trained


def test_no_data_dir_uses_and_records_the_system_copy():
    splits = data.load("fashion_mnist", validation_size=100)
    source = splits.data_source
    assert source["kind"] == "idx" and source["path"] == DEBIAN_FASHION_MNIST_DIR
    assert source["chosen"] == "system copy (no data_dir given)"
    assert {f["name"] for f in source["files"]} == {f + ".gz" for f in IDX_FILES}
    assert data.source_line(source) == f"IDX files in {DEBIAN_FASHION_MNIST_DIR}, system copy (no data_dir given)"


@pytest.mark.parametrize("source", ["auto", "local"])
def test_a_data_dir_never_falls_back_to_the_system_copy(tmp_path, source):
    with pytest.raises(ValueError, match=r"^data_dir=.* is empty, not 'fashion_mnist'"):
        data.load("fashion_mnist", data_dir=str(tmp_path), source=source)


def test_find_ticket_from_python_records_its_source(tmp_path):
    from tf_lottery import ExperimentConfig, config as config_lib, find_ticket

    write_idx_set(tmp_path / "own", train_count=12, test_count=4)
    config = config_lib.override(ExperimentConfig(), dataset="fashion_mnist", data_dir=str(tmp_path / "own"),
                                 iterations=4, rounds=1, eval_every=4, batch_size=4, validation_size=2)
    lines = []
    ticket = find_ticket(config=config, output_dir=str(tmp_path / "run"), log=lines.append)
    assert lines[0] == f"data: IDX files in {tmp_path / 'own'}, data_dir"
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["data_source"]
    assert recorded["path"] == str(tmp_path / "own") and ticket.rounds
    with pytest.raises(ValueError, match=r"^data_dir=.* does not exist"):
        find_ticket(config=config_lib.override(config, data_dir=str(tmp_path / "gone")),
                    output_dir=str(tmp_path / "run2"), log=lines.append)
    assert not (tmp_path / "run2").exists()


def test_export_and_its_verification_say_which_test_images_they_compared_on(tmp_path):
    from tf_lottery import export

    own = tmp_path / "own" / "fashion-mnist"
    write_idx_set(own, train_count=12, test_count=4)
    run = tmp_path / "run"
    assert run_find("--dataset=fashion_mnist", f"--data_dir={tmp_path / 'own'}", f"--output_dir={run}", *TINY)[0] == 0
    result = export.export_ticket(str(run), str(tmp_path / "serving"), round=0)
    expected = f"test images of fashion_mnist from IDX files in {own}, data_dir"
    assert result.verification.inputs == expected
    again = export.verify(result.path)
    assert again.inputs == expected and f"  inputs: {expected}" in again.report().splitlines()
    with pytest.raises(ValueError, match=r"run_dir='.*/gone' does not exist or is not a directory"):
        export.verify(result.path, run_dir=str(tmp_path / "gone"))
