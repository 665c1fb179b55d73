"""The run directory in process (tf_lottery.files, run_checks, run_directory): crash-safe writes,
the temporaries this tool owns, links, the lock, and every check applied to what is read back.
No TensorFlow: these modules serve lottery-report, which must start without it."""

import csv
import errno
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tf_lottery import config as C
from tf_lottery import files
from tf_lottery.search import run_checks as checks
from tf_lottery.files import CorruptRunError
from tf_lottery.search.run_directory import CSV_COLUMNS, RunDirectory, RunLockedError

f32 = np.float32


def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def listing(directory) -> list[str]:
    return sorted(os.listdir(directory))


# -- imports ---------------------------------------------------------------------------------------


def test_reading_a_run_imports_no_tensorflow():
    code = "import sys, tf_lottery.search.run_directory; print(sorted(m for m in ('tensorflow', 'tf_keras', 'keras') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


# -- atomic writes ---------------------------------------------------------------------------------


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / "sub" / "a.json")
    files.atomic_write_json(path, {"x": 1})
    files.atomic_write_json(path, {"x": [1, 2]})
    assert files.load_json(path) == {"x": [1, 2]}
    assert listing(tmp_path / "sub") == ["a.json"]


def test_a_failed_write_leaves_no_temporary_and_names_the_final_file(tmp_path):
    path = tmp_path / "target"
    path.mkdir()  # renaming a file onto a directory fails for real (EISDIR)
    with pytest.raises(OSError) as info:
        files.atomic_write_bytes(str(path), b"data")
    assert info.value.errno == errno.EISDIR
    assert info.value.filename == str(path)
    assert listing(tmp_path) == ["target"]


def test_a_full_disk_names_the_file_not_its_temporary(tmp_path, monkeypatch):
    path = str(tmp_path / "masks.npz")
    files.atomic_write_bytes(path, b"old")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError) as info:
        files.atomic_write_bytes(path, b"new")
    monkeypatch.undo()
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, path)
    assert "tflottery" not in str(info.value)
    assert listing(tmp_path) == ["masks.npz"]
    assert open(path, "rb").read() == b"old"  # readers still see the old file


def test_an_interrupted_write_leaves_no_temporary_and_is_not_rewrapped(tmp_path, monkeypatch):
    path = str(tmp_path / "a.json")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        files.atomic_write_json(path, {})
    monkeypatch.undo()
    assert listing(tmp_path) == []


def test_atomic_directory_appears_whole_or_not_at_all(tmp_path):
    target = str(tmp_path / "export")
    with files.atomic_directory(target) as tmp:
        assert files.is_temporary(os.path.basename(tmp))
        open(os.path.join(tmp, "a"), "w").write("1")
        assert not os.path.exists(target)
    assert listing(target) == ["a"]

    with pytest.raises(RuntimeError):
        with files.atomic_directory(target) as tmp:
            open(os.path.join(tmp, "b"), "w").write("2")
            raise RuntimeError("crash")
    assert listing(tmp_path) == ["export"]
    assert listing(target) == ["a"]  # the old directory is untouched

    with files.atomic_directory(target) as tmp:
        open(os.path.join(tmp, "c"), "w").write("3")
    assert listing(tmp_path) == ["export"]  # the old one is gone, not left as a *.old
    assert listing(target) == ["c"]


def test_save_and_load_arrays_round_trip(tmp_path):
    path = str(tmp_path / "a.npz")
    arrays = {"fc1": np.arange(6, dtype=f32).reshape(2, 3), "out": np.array([1, 0], np.int64)}
    files.save_arrays(path, arrays)
    loaded = files.load_arrays(path)
    assert sorted(loaded) == ["fc1", "out"]
    for name in arrays:
        np.testing.assert_array_equal(loaded[name], arrays[name])
        assert loaded[name].dtype == arrays[name].dtype


def test_load_arrays_refuses_pickles(tmp_path):
    path = str(tmp_path / "masks.npz")
    np.savez(path, fc1=np.array([{"exec": "me"}], dtype=object))
    with pytest.raises(CorruptRunError) as info:
        files.load_arrays(path)
    assert one_line(info) == f"{path} is truncated or corrupted (ValueError); delete it to recompute"


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"not a zip"])
def test_load_arrays_reports_a_broken_file_in_one_line(tmp_path, content):
    path = tmp_path / "masks.npz"
    path.write_bytes(content)
    with pytest.raises(CorruptRunError) as info:
        files.load_arrays(str(path))
    assert one_line(info).startswith(f"{path} is truncated or corrupted (")


@pytest.mark.parametrize("content", [b"", b'{"a": ', b"\xff\xfe"])
def test_load_json_reports_a_broken_file_in_one_line(tmp_path, content):
    path = tmp_path / "main.json"
    path.write_bytes(content)
    with pytest.raises(CorruptRunError) as info:
        files.load_json(str(path))
    assert one_line(info).startswith(f"{path} is truncated or corrupted (")


# -- temporary names -------------------------------------------------------------------------------


def test_temporary_names_carry_the_marker_and_the_pid(tmp_path):
    path = str(tmp_path / "masks.npz")
    for kind in ("tmp", "old"):
        name = files.temporary_name(path, kind)
        directory, base = os.path.split(name)
        assert directory == str(tmp_path)
        prefix = f".masks.npz.tflottery-{os.getpid()}-"
        assert base.startswith(prefix) and base.endswith("." + kind)
        assert len(base) == len(prefix) + 8 + 1 + len(kind)
        assert files.is_temporary(base)
    assert files.temporary_name(path) != files.temporary_name(path)


@pytest.mark.parametrize("name", [
    "masks.npz", ".x.tmp", "x.tmp", "masks.npz.old", ".masks.npz.old", ".round_00.old",
    "masks.npz.tflottery-12-0123abcd.tmp",  # no leading dot
    ".masks.npz.tflottery-12-0123abcd.bak",  # another suffix
    ".masks.npz.tflottery-12-0123ABCD.tmp",  # not our hex
    ".masks.npz.tflottery-12-0123abc.tmp",  # 7 digits
    ".masks.npz.tflottery-x-0123abcd.tmp",  # no pid
    ".masks.npz.other-12-0123abcd.tmp",  # another tool
    ".tflottery-12-0123abcd.tmp",  # no base name
])
def test_is_temporary_refuses_names_it_did_not_give(name):
    assert not files.is_temporary(name)


@pytest.mark.parametrize("name", [".masks.npz.tflottery-12-0123abcd.tmp", ".round_03.tflottery-1-ffffffff.old"])
def test_is_temporary_matches_our_names(name):
    assert files.is_temporary(name)


@settings(max_examples=50, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/"), min_size=1, max_size=30)
       .filter(lambda s: s not in (".", "..")))
def test_every_name_temporary_name_gives_is_temporary(base):
    assert files.is_temporary(os.path.basename(files.temporary_name(os.path.join("/run", base))))


def make_tree(root):
    """A run with temporaries of ours, look-alikes, and links named like ours pointing outside."""
    run = root / "run"
    (run / "round_00").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    ours = [
        run / ".config.json.tflottery-7-0123abcd.tmp",
        run / "round_00" / ".masks.npz.tflottery-7-89abcdef.tmp",
    ]
    for path in ours:
        path.write_text("half")
    our_dir = run / ".round_01.tflottery-7-00000000.tmp"
    (our_dir / "checkpoint").mkdir(parents=True)
    (our_dir / "checkpoint" / "ticket.index").write_text("x")
    theirs = [run / ".x.tmp", run / "notes.old", run / "round_00" / ".masks.npz.old"]
    for path in theirs:
        path.write_text("keep")
    outside_file = root / "outside.txt"
    outside_file.write_text("precious")
    outside_dir = root / "outside"
    outside_dir.mkdir()
    (outside_dir / "f").write_text("precious")
    links = [run / ".a.tflottery-7-11111111.tmp", run / "round_00" / ".b.tflottery-7-22222222.old"]
    links[0].symlink_to(outside_file)
    links[1].symlink_to(outside_dir, target_is_directory=True)
    return run, ours + [our_dir], theirs, links


def test_remove_temporaries_deletes_only_our_names_and_never_follows_a_link(tmp_path):
    run, ours, theirs, links = make_tree(tmp_path)
    removed = RunDirectory(str(run)).remove_temporaries()
    assert sorted(removed) == sorted(str(p) for p in ours)
    assert not any(os.path.lexists(p) for p in ours)
    assert all(p.read_text() == "keep" for p in theirs)
    assert all(os.path.islink(p) for p in links)
    assert (tmp_path / "outside.txt").read_text() == "precious"
    assert (tmp_path / "outside" / "f").read_text() == "precious"
    assert (run / "config.json").exists()


def test_remove_temporaries_of_a_missing_run_removes_nothing(tmp_path):
    assert RunDirectory(str(tmp_path / "none")).remove_temporaries() == []


# -- links -----------------------------------------------------------------------------------------


def test_check_no_links_passes_a_plain_run(tmp_path):
    (tmp_path / "round_00").mkdir()
    (tmp_path / "round_00" / "masks.npz").write_bytes(b"x")
    RunDirectory(str(tmp_path)).check_no_links()


@pytest.mark.parametrize("where", ["config.json", "round_00/masks.npz", "round_00", "round_00/dangling"])
def test_check_no_links_names_the_link(tmp_path, where):
    run = tmp_path / "run"
    if where == "round_00":
        run.mkdir()
    else:
        (run / "round_00").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    link = run / where
    link.symlink_to(tmp_path / ("missing" if "dangling" in where else "elsewhere"))
    with pytest.raises(CorruptRunError) as info:
        RunDirectory(str(run)).check_no_links()
    assert one_line(info).startswith(f"{link} is a symbolic link; tf_lottery refuses links inside a run directory")


def test_writes_and_reads_through_a_link_are_refused(tmp_path):
    target = tmp_path / "target.json"
    target.write_text('{"a": 1}')
    link = tmp_path / "config.json"
    link.symlink_to(target)
    for call in (lambda: files.atomic_write_json(str(link), {}), lambda: files.atomic_write_bytes(str(link), b""),
                 lambda: files.save_arrays(str(link), {}), lambda: files.load_json(str(link)),
                 lambda: files.load_arrays(str(link))):
        with pytest.raises(CorruptRunError, match="is a symbolic link"):
            call()
    assert target.read_text() == '{"a": 1}'
    (tmp_path / "real_dir").mkdir()
    (tmp_path / "dir_link").symlink_to(tmp_path / "real_dir", target_is_directory=True)
    with pytest.raises(CorruptRunError, match="is a symbolic link"):
        with files.atomic_directory(str(tmp_path / "dir_link")):
            pass
    assert listing(tmp_path / "real_dir") == []
    assert not any(files.is_temporary(n) for n in listing(tmp_path))


def test_clearing_progress_through_a_link_is_refused(tmp_path):
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "state.json").write_text("{}")
    run = tmp_path / "run"
    run.mkdir()
    (run / "in_progress").symlink_to(tmp_path / "keep", target_is_directory=True)
    with pytest.raises(CorruptRunError, match="is a symbolic link"):
        RunDirectory(str(run)).clear_progress()
    assert listing(tmp_path / "keep") == ["state.json"]


def test_progress_killed_while_it_is_cleared_is_whole_or_gone(tmp_path, monkeypatch):
    """A kill -9 in the middle of deleting in_progress/ (seen in CI: state.json left, state.index
    already deleted, and the resume refused) must leave it whole or gone: the removal works on a
    temporary name, which the next run deletes."""
    run = RunDirectory(str(tmp_path / "run"))
    progress = tmp_path / "run" / "in_progress"
    progress.mkdir(parents=True)
    for name in ("state.index", "state.data-00000-of-00001", "state.json"):
        (progress / name).write_text("x")

    def killed_midway(path, ignore_errors=False):
        os.unlink(os.path.join(path, "state.index"))  # the first file goes, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(files.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        run.clear_progress()
    monkeypatch.undo()
    assert not progress.exists()
    assert run.load_progress(100) is None
    left = listing(tmp_path / "run")
    assert len(left) == 1 and files.is_temporary(left[0])
    assert run.remove_temporaries() == [str(tmp_path / "run" / left[0])]
    assert listing(tmp_path / "run") == []


# -- the lock --------------------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from tf_lottery.search.run_directory import RunDirectory
    RunDirectory(sys.argv[1]).lock()
    print("locked", flush=True)
    time.sleep(120)
""")


def test_a_second_process_is_refused_the_lock_until_the_holder_dies(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        run = RunDirectory(str(tmp_path))
        with pytest.raises(RunLockedError) as info:
            run.lock()
        assert one_line(info) == (
            f"output_dir {str(tmp_path)!r} is being written by another process (pid {holder.pid}); "
            "wait for it to finish or stop it, then rerun to resume"
        )
        assert isinstance(info.value, ValueError)
    finally:
        holder.kill()  # SIGKILL: no chance to unlock; the kernel releases the flock
        holder.wait(timeout=30)
        holder.stdout.close()
    run.lock()
    assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"
    run.unlock()


def test_lock_is_idempotent_and_unlock_releases_it(tmp_path):
    first, second = RunDirectory(str(tmp_path)), RunDirectory(str(tmp_path))
    first.lock()
    first.lock()
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
        second.lock()  # a flock is per open file, so a second handle in this process is refused too
    first.unlock()
    first.unlock()
    second.lock()
    second.unlock()


def test_a_linked_lock_file_is_refused(tmp_path):
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / ".lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CorruptRunError, match="is a symbolic link"):
        RunDirectory(str(tmp_path)).lock()


# -- paths -----------------------------------------------------------------------------------------


def test_paths_of_the_layout(tmp_path):
    run = RunDirectory(str(tmp_path))
    assert run.round_dir(3) == str(tmp_path / "round_03")
    assert run.round_dir(123) == str(tmp_path / "round_123")
    assert run.masks_file(0) == str(tmp_path / "round_00" / "masks.npz")
    assert run.stage_file(2, "random_reinit") == str(tmp_path / "round_02" / "random_reinit.json")
    assert run.checkpoint_prefix(1) == str(tmp_path / "round_01" / "checkpoint" / "ticket")
    for bad in ("../x", "Main", "", "a/b", "1st"):
        with pytest.raises(ValueError, match="is not allowed in a path"):
            run.stage_file(0, bad)
    for name in ("round_00", "round_02", "round_100", "round_1", "round_xx", ".round_03.tflottery-1-00000000.tmp"):
        (tmp_path / name).mkdir()
    assert run.rounds_on_disk() == [0, 2, 100]


@pytest.mark.parametrize("path", ["", "   ", None])
def test_a_run_needs_a_path(path):
    with pytest.raises(ValueError, match="is empty; give a directory for the run"):
        RunDirectory(path)


def test_check_new_refuses_a_file_and_a_foreign_directory(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        RunDirectory(str(tmp_path / "file")).check_new()
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("")
    with pytest.raises(ValueError, match="is not empty and holds no tf_lottery run"):
        RunDirectory(str(tmp_path / "theirs")).check_new()
    (tmp_path / "empty").mkdir()
    RunDirectory(str(tmp_path / "empty")).check_new()
    RunDirectory(str(tmp_path / "new")).check_new()


# -- config.json -----------------------------------------------------------------------------------


def record_of(config, **extra):
    return {"version": C.CONFIG_VERSION, "config": config.to_dict(), "fingerprint": config.fingerprint(), **extra}


def test_create_locks_and_writes_the_record_that_read_record_reads(tmp_path):
    config = C.override(C.ExperimentConfig(), fc_rate=0.3, controls="random_reinit")
    run = RunDirectory(str(tmp_path / "run"))
    run.create(json.loads(json.dumps(record_of(config, model={"layers": 2}))))
    try:
        assert run.exists()
        record = run.read_record()
        assert record["experiment"] == config
        assert record["version"] == C.CONFIG_VERSION and record["model"] == {"layers": 2}
        with pytest.raises(RunLockedError):
            RunDirectory(run.path).lock()
    finally:
        run.unlock()


def write_record(tmp_path, record):
    files.atomic_write_json(str(tmp_path / "config.json"), record)
    return RunDirectory(str(tmp_path))


@pytest.mark.parametrize("record, why", [
    ({"name": "other tool"}, "is not a tf_lottery run record (no 'config' object); use another output_dir"),
    ([1, 2], "is not a tf_lottery run record (no 'config' object); use another output_dir"),
    ({"config": {}, "fingerprint": "0123456789abcdef"},
     "is not a tf_lottery run record (sections ['model', 'data', 'training', 'pruning', 'runtime'] missing); use another directory"),
    ({"config": {"model": {"model": "x"}}, "fingerprint": "0123456789abcdef"},
     "is not a tf_lottery run record (sections ['data', 'training', 'pruning', 'runtime'] missing); use another directory"),
])
def test_read_record_refuses_another_tools_config_json(tmp_path, record, why):
    run = write_record(tmp_path, record)
    with pytest.raises(CorruptRunError) as info:
        run.read_record()
    assert one_line(info) == f"{run.config_file} {why}"


@pytest.mark.parametrize("fingerprint", [None, "abc", "0123456789ABCDEF", 12])
def test_read_record_refuses_a_foreign_fingerprint(tmp_path, fingerprint):
    run = write_record(tmp_path, dict(record_of(C.ExperimentConfig()), fingerprint=fingerprint))
    with pytest.raises(CorruptRunError, match=r"is not a tf_lottery run record \(fingerprint "):
        run.read_record()


def test_read_record_upgrades_version_1(tmp_path):
    config = C.override(C.ExperimentConfig(), model="conv2", pruning_scope="global")
    saved = config.to_dict()
    saved["model"]["name"] = saved["model"].pop("model")
    saved["pruning"]["scope"] = saved["pruning"].pop("pruning_scope")
    del saved["training"]["jit_compile"]
    run = write_record(tmp_path, {"config": saved, "fingerprint": "0123456789abcdef"})  # version 1 had no "version"
    record = run.read_record()
    assert record["version"] == 1
    assert record["experiment"] == config
    assert record["config"]["model"] == {"model": "conv2", "dropout_rate": 0.0}


@pytest.mark.parametrize("version", [C.CONFIG_VERSION + 1, "2", 2.0])
def test_read_record_refuses_a_future_or_garbled_version(tmp_path, version):
    run = write_record(tmp_path, dict(record_of(C.ExperimentConfig()), version=version))
    with pytest.raises(CorruptRunError) as info:
        run.read_record()
    assert one_line(info) == (f"{run.config_file} has layout version {version!r}, this tf_lottery reads up to "
                              f"{C.CONFIG_VERSION}; use a newer tf_lottery")


def test_read_record_refuses_an_invalid_config(tmp_path):
    record = record_of(C.ExperimentConfig())
    record["config"]["pruning"]["fc_rate"] = 2
    run = write_record(tmp_path, record)
    with pytest.raises(CorruptRunError) as info:
        run.read_record()
    assert one_line(info) == (f"{run.config_file} is not a valid tf_lottery config (fc_rate=2 is outside the "
                              "allowed range (0, 1)); use another output_dir")


# -- masks -----------------------------------------------------------------------------------------

SHAPES = {"fc1": (2, 3), "out": (3,)}


def good_masks(dtype=f32):
    return {"fc1": np.array([[1, 0, 1], [0, 0, 1]], dtype), "out": np.array([1, 1, 0], dtype)}


@pytest.mark.parametrize("dtype", [f32, np.float64, np.int8, np.uint8])
def test_check_masks_accepts_0_1_masks_of_any_number_type_as_float32(dtype):
    out = checks.check_masks("m.npz", good_masks(dtype), SHAPES, counts={"fc1": 3, "out": 2}, total=5)
    assert all(m.dtype == f32 for m in out.values())
    np.testing.assert_array_equal(out["fc1"], good_masks()["fc1"])


@pytest.mark.parametrize("change, why", [
    (lambda m: m.update(fc1=np.array([[1, 0.5, 1], [0, 0, 1]], f32)), "holds a mask for layer 'fc1' with values other than 0 and 1"),
    (lambda m: m.update(out=np.array([1, np.nan, 0], f32)), "holds a mask for layer 'out' with values other than 0 and 1"),
    (lambda m: m.update(out=np.array([1, -1, 0], f32)), "holds a mask for layer 'out' with values other than 0 and 1"),
    (lambda m: m.update(out=np.array([True, True, False])), "holds a mask for layer 'out' with values other than 0 and 1"),
    (lambda m: m.update(fc1=np.ones((3, 2), f32)), "does not fit this model: layer 'fc1' has kernel shape (2, 3), file has (3, 2)"),
    (lambda m: m.pop("out"), "does not fit this model: it holds masks for layers ['fc1'] but the model's prunable layers are ['fc1', 'out']"),
    (lambda m: m.update(fc2=np.ones(2, f32)),
     "does not fit this model: it holds masks for layers ['fc1', 'fc2', 'out'] but the model's prunable layers are ['fc1', 'out']"),
])
def test_check_masks_refuses_values_and_shapes(change, why):
    masks = good_masks()
    change(masks)
    with pytest.raises(CorruptRunError) as info:
        checks.check_masks("m.npz", masks, SHAPES)
    assert one_line(info) == f"m.npz {why}; delete it to recompute"


def test_check_masks_checks_counts_per_layer_and_in_total():
    with pytest.raises(CorruptRunError) as info:
        checks.check_masks("m.npz", good_masks(), SHAPES, counts={"fc1": 2, "out": 2})
    assert one_line(info) == "m.npz keeps 3 weights of layer 'fc1', the config gives 2; delete it to recompute"
    with pytest.raises(CorruptRunError) as info:
        checks.check_masks("m.npz", good_masks(), SHAPES, total=6)
    assert one_line(info) == "m.npz keeps 5 weights, the config gives 6; delete it to recompute"


def test_masks_round_trip_through_the_run(tmp_path):
    run = RunDirectory(str(tmp_path))
    assert run.load_masks(0, SHAPES) is None
    run.save_masks(1, good_masks())
    loaded = run.load_masks(1, SHAPES, counts={"fc1": 3, "out": 2}, total=5)
    np.testing.assert_array_equal(loaded["out"], [1, 1, 0])


def test_weights_round_trip_and_are_checked(tmp_path):
    run = RunDirectory(str(tmp_path))
    values = [np.ones((2, 3), f32), np.zeros(3, f32)]
    assert run.load_weights("initial.npz", [(2, 3), (3,)]) is None
    run.save_weights("initial.npz", values)
    loaded = run.load_weights("initial.npz", [(2, 3), (3,)])
    assert [v.shape for v in loaded] == [(2, 3), (3,)]
    with pytest.raises(CorruptRunError, match="holds weights of another model"):
        run.load_weights("initial.npz", [(3, 2), (3,)])
    run.save_weights("initial.npz", [np.ones((2, 3), f32), np.array([0, np.inf, 0], f32)])
    with pytest.raises(CorruptRunError, match="non-finite"):
        run.load_weights("initial.npz", [(2, 3), (3,)])
    files.save_arrays(run.file("initial.npz"), {"w0000": np.ones(1), "w0002": np.ones(1)})
    with pytest.raises(CorruptRunError, match="is not a weight list written by tf_lottery"):
        run.load_weights("initial.npz", [(1,), (1,)])


# -- stage results and histories -------------------------------------------------------------------


def evaluation(iteration, loss=0.5):
    return {"iteration": iteration, "train_loss": loss, "validation_loss": loss, "validation_accuracy": 0.9,
            "test_loss": loss, "test_accuracy": 0.9}


def stage(**changes):
    result = {
        "test_accuracy": 0.9, "validation_loss": 0.3, "early_stop_iteration": 100, "early_stop_test_accuracy": 0.91,
        "early_stop_validation_loss": 0.28, "iterations": 200, "seconds": 1.5,
        "history": [evaluation(100), evaluation(200)], "weights_remaining": 0.8, "layers": {"fc1": 0.8},
    }
    result.update(changes)
    return result


def stage_error(result, total=None) -> str:
    with pytest.raises(CorruptRunError) as info:
        checks.check_stage("s.json", result, total)
    message = one_line(info)
    assert message.startswith("s.json ") and message.endswith("; delete it to recompute")
    return message[len("s.json "):-len("; delete it to recompute")]


def test_check_stage_accepts_a_stage_result():
    result = stage()
    assert checks.check_stage("s.json", result, 200) is result
    checks.check_stage("s.json", stage(all_weights_remaining=0.9))  # added after version 1
    checks.check_stage("s.json", stage(test_accuracy=1, seconds=2, weights_remaining=1))  # ints are numbers
    checks.check_stage("s.json", stage(weights_remaining=1.0))


def test_check_stage_names_missing_and_unknown_keys():
    result = stage()
    del result["seconds"], result["layers"]
    assert stage_error(result) == "is not a stage result (lacks ['seconds', 'layers'])"
    assert stage_error(stage(foo=1)) == "is not a stage result (has unknown keys ['foo'])"
    assert stage_error([stage()]) == "is not a stage result (not a JSON object)"


@pytest.mark.parametrize("key, value, kind", [
    ("early_stop_iteration", 100.0, "int"), ("iterations", "200", "int"), ("early_stop_iteration", True, "int"),
    ("test_accuracy", True, "float"), ("test_accuracy", None, "float"), ("seconds", "1.5", "float"),
    ("history", {}, "list"), ("layers", [], "dict"), ("all_weights_remaining", "0.9", "float"),
])
def test_check_stage_refuses_a_value_of_the_wrong_type(key, value, kind):
    assert stage_error(stage(**{key: value})) == f"has {key}={value!r}, expected a {kind}"


def test_check_stage_checks_the_budget_the_history_and_the_fraction():
    assert stage_error(stage(history=[])) == "has an empty history"
    assert stage_error(stage(), total=300) == "was trained for 200 iterations, the config says 300"
    assert stage_error(stage(), total=150) == "has a history entry at iteration 200 out of order or past the end"
    for fraction in (0, 0.0, -0.1, 1.5):
        assert stage_error(stage(weights_remaining=fraction)) == f"has weights_remaining={fraction!r} outside (0, 1]"


@pytest.mark.parametrize("history, why", [
    ("x", "has a history that is not a list"),
    ([[1]], "has a history entry with keys list, expected " + str(list(checks.EVALUATION_KEYS))),
    ([{k: v for k, v in evaluation(100).items() if k != "test_loss"}],
     "has a history entry with keys ['iteration', 'test_accuracy', 'train_loss', 'validation_accuracy', 'validation_loss'], "
     "expected " + str(list(checks.EVALUATION_KEYS))),
    ([dict(evaluation(100), extra=1)], "has a history entry with keys "
     "['extra', 'iteration', 'test_accuracy', 'test_loss', 'train_loss', 'validation_accuracy', 'validation_loss'], "
     "expected " + str(list(checks.EVALUATION_KEYS))),
    ([evaluation(100.0)], "has history.iteration=100.0, expected a int"),
    ([dict(evaluation(100), test_loss="0.5")], "has history.test_loss='0.5', expected a float"),
    ([evaluation(0)], "has a history entry at iteration 0 out of order or past the end"),
    ([evaluation(100), evaluation(100)], "has a history entry at iteration 100 out of order or past the end"),
    ([evaluation(200), evaluation(100)], "has a history entry at iteration 100 out of order or past the end"),
    ([evaluation(100), evaluation(201)], "has a history entry at iteration 201 out of order or past the end"),
])
def test_check_history_refuses_keys_types_order_and_the_budget(history, why):
    with pytest.raises(CorruptRunError) as info:
        checks.check_history("h.json", history, total_iterations=200)
    assert one_line(info) == f"h.json {why}; delete it to recompute"


def test_check_history_accepts_increasing_evaluations_up_to_the_budget():
    history = [evaluation(1), evaluation(100), evaluation(200)]
    assert checks.check_history("h.json", history, 200) is history
    assert checks.check_history("h.json", [], 200) == []
    assert checks.check_history("h.json", [evaluation(10**9)]) == [evaluation(10**9)]  # no budget given


def test_stages_round_trip_through_the_run(tmp_path):
    run = RunDirectory(str(tmp_path))
    assert run.load_stage(0, "main") is None
    run.save_stage(0, "main", stage())
    assert run.load_stage(0, "main", 200) == stage()
    with pytest.raises(CorruptRunError, match="was trained for 200 iterations"):
        run.load_stage(0, "main", 400)


# -- in-progress state -----------------------------------------------------------------------------


def progress(**changes):
    state = {"round": 1, "stage": "random_reinit", "iteration": 200, "history": [evaluation(100), evaluation(200)],
             "seconds": 1.5}
    state.update(changes)
    return state


def progress_error(tmp_path, state, total=1000) -> str:
    run = RunDirectory(str(tmp_path))
    files.atomic_write_json(os.path.join(run.progress_dir, "state.json"), state)
    with pytest.raises(CorruptRunError) as info:
        run.load_progress(total)
    # Checks of the record's shape say to delete the folder; checks of its values, shared with the
    # stage files, say to delete the file (either restarts that network).
    message = one_line(info)
    fixes = [f"; delete {run.progress_dir} to restart that network from its beginning", "; delete it to recompute"]
    assert message.startswith(os.path.join(run.progress_dir, "state.json ")) and any(message.endswith(f) for f in fixes)
    fix = next(f for f in fixes if message.endswith(f))
    return message[:-len(fix)].split("state.json ", 1)[1]


def test_load_progress_reads_a_valid_state(tmp_path):
    run = RunDirectory(str(tmp_path))
    assert run.load_progress(1000) is None
    for state in (progress(), progress(history=[]), progress(iteration=999, history=[evaluation(999)]),
                  progress(iteration=1, history=[evaluation(1)], round=0, stage="main", seconds=0)):
        files.atomic_write_json(os.path.join(run.progress_dir, "state.json"), state)
        assert run.load_progress(1000) == state


@pytest.mark.parametrize("iteration", [0, 1000, 1001, -5])
def test_load_progress_refuses_an_iteration_outside_the_budget(tmp_path, iteration):
    why = progress_error(tmp_path, progress(iteration=iteration, history=[]))
    assert why == f"says iteration {iteration}, outside 1..999"


def test_load_progress_refuses_missing_extra_and_mistyped_keys(tmp_path):
    state = progress()
    del state["seconds"]
    assert progress_error(tmp_path, state) == "is not a progress record (keys ['history', 'iteration', 'round', 'stage'])"
    assert progress_error(tmp_path, progress(optimizer=1)).startswith("is not a progress record (keys ['history', 'iteration', 'optimizer'")
    assert progress_error(tmp_path, [1]) == "is not a progress record (keys ?)"
    assert progress_error(tmp_path, progress(round="1")) == "has round='1', expected a int"
    assert progress_error(tmp_path, progress(stage=3)) == "has stage=3, expected a str"


@pytest.mark.parametrize("changes", [{"round": -1}, {"stage": "../main"}, {"stage": "Main"}, {"seconds": float("inf")},
                                     {"seconds": float("nan")}])
def test_load_progress_refuses_an_impossible_round_stage_or_time(tmp_path, changes):
    assert progress_error(tmp_path, progress(**changes)) == "names no valid round and stage"


def test_load_progress_refuses_a_history_past_or_short_of_its_iteration(tmp_path):
    assert progress_error(tmp_path, progress(iteration=150)) == \
        "has a history entry at iteration 200 out of order or past the end"
    assert progress_error(tmp_path, progress(iteration=300)) == "has a history that does not end at its iteration"


# -- choosing a round ------------------------------------------------------------------------------


def rows(*accuracies):
    return [{"round": i, "early_stop_test_accuracy": a} for i, a in enumerate(accuracies)]


def test_select_round_best_last_and_numbers():
    finished = rows(0.90, 0.95, 0.95, 0.93)
    assert checks.select_round(finished, "best") == 2  # ties go to the later, sparser round
    assert checks.select_round(finished, " Best ") == 2
    assert checks.select_round(finished, "last") == 3
    assert checks.select_round(finished, "LAST") == 3
    assert checks.select_round(finished, 1) == 1
    assert checks.select_round(finished, "0") == 0
    assert checks.select_round(list(reversed(finished)), "best") == 2  # the order of the rows does not matter


def test_select_round_among_rounds_that_are_not_contiguous():
    finished = [{"round": 0, "early_stop_test_accuracy": 0.9}, {"round": 3, "early_stop_test_accuracy": 0.8}]
    assert checks.select_round(finished, "last") == 3
    assert checks.select_round(finished, "best") == 0
    with pytest.raises(ValueError, match="round 1 is out of range; allowed: best, last or 0..3"):
        checks.select_round(finished, 1)


@pytest.mark.parametrize("which, message", [
    (4, "round 4 is out of range; allowed: best, last or 0..3 (the finished rounds)"),
    (-1, "round -1 is out of range; allowed: best, last or 0..3 (the finished rounds)"),
    ("first", "round 'first' is not a round; allowed: best, last or 0..3"),
    ("1.5", "round '1.5' is not a round; allowed: best, last or 0..3"),
    (None, "round None is not a round; allowed: best, last or 0..3"),
])
def test_select_round_refuses_what_is_not_a_finished_round(which, message):
    with pytest.raises(ValueError) as info:
        checks.select_round(rows(0.1, 0.2, 0.3, 0.4), which)
    assert one_line(info) == message


def test_select_round_of_a_run_without_rounds():
    with pytest.raises(ValueError, match="the run has no finished round yet"):
        checks.select_round([], "last")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from([0.1, 0.5, 0.9]), min_size=1, max_size=8))
def test_select_round_best_is_the_last_of_the_most_accurate(accuracies):
    best = max(i for i, a in enumerate(accuracies) if a == max(accuracies))
    assert checks.select_round(rows(*accuracies), "best") == best


# -- summaries -------------------------------------------------------------------------------------


def test_write_summary_then_read_summary_round_trips_and_fills_rounds_csv(tmp_path):
    config = C.ExperimentConfig()
    record = {"config": config.to_dict(), "fingerprint": config.fingerprint()}
    control = dict(stage(test_accuracy=0.7, early_stop_test_accuracy=0.72, early_stop_iteration=50))
    summary_rows = [
        checks.stage_row(0, stage(weights_remaining=1.0), {}),
        checks.stage_row(1, stage(), {"random_reinit": control, "random_prune": control}),
    ]
    assert "history" not in summary_rows[1] and "history" not in summary_rows[1]["controls"]["random_reinit"]
    assert "layers" not in summary_rows[1]["controls"]["random_reinit"]
    run = RunDirectory(str(tmp_path))
    run.write_summary(json.loads(json.dumps(record)), summary_rows)

    summary = run.read_summary()
    assert summary["version"] == C.CONFIG_VERSION and summary["fingerprint"] == config.fingerprint()
    assert C.ExperimentConfig.from_dict(summary["config"]) == config
    assert summary["rounds"] == json.loads(json.dumps(summary_rows))
    assert checks.select_round(summary["rounds"], "best") == 1

    with open(run.file("rounds.csv"), newline="") as f:
        table = list(csv.DictReader(f))
        columns = list(table[0])
    controls = [f"{c}_{m}" for c in ("random_prune", "random_reinit")
                for m in ("test_accuracy", "early_stop_iteration", "early_stop_test_accuracy")]
    assert columns == list(CSV_COLUMNS) + controls
    assert CSV_COLUMNS == ("round", "weights_remaining", "test_accuracy", "early_stop_iteration",
                           "early_stop_test_accuracy", "seconds")
    assert table[0] == {"round": "0", "weights_remaining": "1.0", "test_accuracy": "0.9", "early_stop_iteration": "100",
                        "early_stop_test_accuracy": "0.91", "seconds": "1.5", **{c: "" for c in controls}}
    assert table[1]["random_reinit_early_stop_iteration"] == "50"
    assert table[1]["random_prune_test_accuracy"] == "0.7"
    assert table[1]["weights_remaining"] == "0.8"


def test_rounds_csv_of_a_run_without_controls_has_only_the_ticket_columns(tmp_path):
    run = RunDirectory(str(tmp_path))
    run.write_summary({"config": {}, "fingerprint": "0" * 16}, [checks.stage_row(0, stage(), {})])
    with open(run.file("rounds.csv"), newline="") as f:
        assert next(csv.reader(f)) == list(CSV_COLUMNS)


def test_read_summary_refuses_a_missing_or_foreign_summary(tmp_path):
    run = RunDirectory(str(tmp_path))
    with pytest.raises(ValueError, match=r"is not a tf_lottery run directory \(no summary.json\)"):
        run.read_summary()
    files.atomic_write_json(run.file("summary.json"), {"rounds": []})
    with pytest.raises(CorruptRunError, match=r"is not a tf_lottery summary \(needs 'config' and 'rounds'\)"):
        run.read_summary()


@pytest.mark.parametrize("change, needle", [
    (lambda r: r.update(round="1"), "has a round entry that is not a tf_lottery round"),
    (lambda r: r.pop("controls"), "has a round entry that is not a tf_lottery round"),
    (lambda r: r.update(test_accuracy="0.9"), "has test_accuracy='0.9', expected a float"),
    (lambda r: r.update(early_stop_iteration=1.0), "has early_stop_iteration=1.0, expected a int"),
    (lambda r: r["controls"].update(random_reinit=[]), "has control 'random_reinit' that is not an object"),
    (lambda r: r["controls"].update(random_reinit={"test_accuracy": 0.5}),
     "has random_reinit.early_stop_test_accuracy=None, expected a float"),
])
def test_read_summary_checks_every_row(tmp_path, change, needle):
    row = checks.stage_row(0, stage(), {"random_reinit": stage()})
    change(row)
    run = RunDirectory(str(tmp_path))
    files.atomic_write_json(run.file("summary.json"), {"config": {}, "rounds": [row]})
    with pytest.raises(CorruptRunError) as info:
        run.read_summary()
    assert needle in one_line(info)
    # A row of the wrong shape says to rerun lottery-find; a value of the wrong type (the check shared
    # with the stage files) says to delete the file: either rebuilds it.
    assert one_line(info).endswith(("; rerun lottery-find with the same flags to rebuild it", "; delete it to recompute"))
