"""Exports under damage and bad input (issue 13): killed exports, refused options, overwrite, huge
versions, tampered metadata, truncated checkpoints, files in the way, read-only and full disks.

Each lottery-export case checks the exit code, exactly one stderr line, and that nothing in the run
or the export base changed (or, for a killed export, that the next export repairs it).
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import tf_lottery  # noqa: F401  (before TensorFlow: tf-keras)
import pytest

from tf_lottery import export as E
from tf_lottery import files

from export_helpers import EXPORT, cli, make_run, program, tree

MAX = 2**63 - 1


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("hardening") / "run")
    make_run(out, rounds=2, iterations=20, train=600)
    return out


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    """A good export (version 1) to copy and tamper with."""
    base = tmp_path_factory.mktemp("exported")
    return E.export_ticket(run, str(base), round=1, format="sparse").path


def refused(capfd, run, base, *flags, expect: str):
    """lottery-export with `flags` fails with one line containing `expect`, changing nothing."""
    before_run, before_base = tree(run), tree(base)
    code, out, err = cli(capfd, f"--run_dir={run}", f"--export_base={base}", *flags)
    assert code == 1 and out == ""
    assert len(err) == 1 and err[0].startswith("lottery-export: error: "), err
    assert expect in err[0], err[0]
    assert tree(run) == before_run and tree(base) == before_base
    return err[0]


def temporaries(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if files.is_temporary(n)) if os.path.isdir(directory) else []


def _written(model_dir) -> int:
    """Bytes in the temporary version directories of `model_dir` (files may vanish while we look)."""
    total = 0
    for name in temporaries(model_dir):
        for root, _, names in os.walk(model_dir / name):
            for file_name in names:
                try:
                    total += os.path.getsize(os.path.join(root, file_name))
                except OSError:
                    pass
    return total


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


# -- a killed export ---------------------------------------------------------------------------
def test_export_killed_mid_way_is_cleaned_up_by_the_next_one(run, tmp_path, capfd):
    base = tmp_path / "serving"
    env = dict(os.environ, TF_LOTTERY_OFFLINE="1")
    args = [f"--run_dir={run}", "--round=1", f"--export_base={base}", "--model_name=lenet", "--tflite"]
    process = subprocess.Popen(EXPORT + args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    model_dir = base / "lenet"
    deadline = time.time() + 240
    while not _written(model_dir) and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the export ended before it could be killed"
    left = temporaries(model_dir)
    assert len(left) == 1 and left[0].startswith(".1.tflottery-") and left[0].endswith(".tmp")
    assert _written(model_dir) > 0 and not (model_dir / "1").exists()  # killed while writing

    code, out, err = cli(capfd, *args[:3], "--model_name=lenet")
    assert code == 0, err
    assert sorted(os.listdir(model_dir)) == ["1"]  # the killed export's temporary is gone
    assert E.verify(str(model_dir / "1")).ok


def test_only_stale_temporaries_of_versions_are_removed_and_links_are_not_followed(run, tmp_path):
    base = tmp_path / "serving"
    base.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not ours")
    stale_tmp = base / f".1.tflottery-{dead_pid()}-0123abcd.tmp"
    stale_old = base / f".7.tflottery-{dead_pid()}-89abcdef.old"
    live = base / f".2.tflottery-{os.getppid()}-00000000.tmp"  # its writer is still running
    link = base / f".3.tflottery-{dead_pid()}-11111111.tmp"
    for path in (stale_tmp, stale_old, live):
        (path / "variables").mkdir(parents=True)
        (path / "saved_model.pb").write_bytes(b"half")
    link.symlink_to(outside)
    (base / ".hidden").mkdir()
    (base / "notes.txt").write_text("user's")

    E.export_ticket(run, str(base), round=1)
    assert sorted(os.listdir(base)) == sorted(["1", live.name, link.name, ".hidden", "notes.txt"])
    assert (outside / "keep.txt").read_text() == "not ours"


# -- options refused before anything is written ------------------------------------------------
@pytest.mark.parametrize("flags, expect", [
    (["--warmup=5000"], "warmup=5000 must be an integer in 0..1000"),
    (["--warmup=-1"], "warmup=-1 must be an integer in 0..1000"),
    (["--version=0"], f"version=0 must be an integer in 1..{MAX} (TF Serving's int64 versions)"),
    ([f"--version={MAX + 1}"], f"version={MAX + 1} must be an integer in 1..{MAX}"),
    ([f"--version={10**30}"], f"version={10**30} must be an integer in 1..{MAX}"),
    (["--model_name=../escape"], "model_name '../escape' is not allowed"),
])
def test_refused_options_write_nothing(flags, expect, run, tmp_path, capfd):
    base = tmp_path / "serving"
    refused(capfd, run, base, "--model_name=m", *flags, expect=expect)
    assert not base.exists()
    base.mkdir()
    refused(capfd, run, base, "--model_name=m", *flags, expect=expect)
    assert os.listdir(base) == []


def test_warmup_without_tensorflow_serving_api_is_refused_before_writing(run, tmp_path, capfd, monkeypatch):
    for name in ("tensorflow_serving", "tensorflow_serving.apis"):
        monkeypatch.setitem(sys.modules, name, None)  # importing them fails as if not installed
    base = tmp_path / "serving"
    base.mkdir()
    refused(capfd, run, base, "--model_name=lenet", "--warmup=3", expect="warmup requests need tensorflow-serving-api")
    assert os.listdir(base) == []  # no empty model directory left behind


def test_highest_version_is_accepted_and_the_next_one_refused(run, tmp_path, capfd):
    base = tmp_path / "serving"
    result = E.export_ticket(run, str(base), round=1, version=MAX)
    assert os.path.basename(result.path) == str(MAX)
    refused(capfd, run, base, expect=f"version={MAX + 1} must be an integer in 1..{MAX}")  # the next free one


# -- overwrite ---------------------------------------------------------------------------------
def test_overwrite_replaces_the_version_and_leaves_no_old_directory(run, tmp_path):
    base = tmp_path / "serving"
    E.export_ticket(run, str(base), round=0)
    again = E.export_ticket(run, str(base), round=1, format="sparse", version=1, overwrite=True)
    assert os.listdir(base) == ["1"]
    assert E.read_metadata(again.path)["round"] == 1 and E.read_metadata(again.path)["format"] == "sparse"


def test_overwrite_refuses_a_version_that_is_a_link(run, tmp_path, capfd):
    base, elsewhere = tmp_path / "serving", tmp_path / "elsewhere"
    E.export_ticket(run, str(elsewhere), round=0)
    base.mkdir()
    (base / "1").symlink_to(elsewhere / "1")
    before = tree(elsewhere)
    refused(capfd, run, base, "--version=1", "--overwrite", expect="is a symbolic link; tf_lottery replaces only real directories")
    assert tree(elsewhere) == before


# -- tampered exports and runs -----------------------------------------------------------------
def _edit_metadata(export_dir, change) -> None:
    path = os.path.join(export_dir, "assets.extra", E.METADATA_FILE)
    with open(path) as f:
        meta = json.load(f)
    with open(path, "w") as f:
        f.write(change(meta) if callable(change) else change)


@pytest.mark.parametrize("change, expect", [
    (lambda meta: "{}", "(format=None, allowed: dense, sparse, compact)"),
    (lambda meta: "[1, 2]", "(not a JSON object)"),
    (lambda meta: '{"format": "dense"', "is truncated or corrupted (JSONDecodeError)"),
    (lambda meta: json.dumps({**meta, "input_shape": "28x28"}), "input_shape='28x28' is not a list of sizes"),
    (lambda meta: json.dumps({**meta, "layers": []}), "layers=[] is not an object"),
    (lambda meta: json.dumps({**meta, "round": "best"}), "round is not a round number"),
    (lambda meta: json.dumps({**meta, "layers": {**meta["layers"], "fc1": {**meta["layers"]["fc1"], "shape": [784, -1]}}}),
     "layer 'fc1' has shape=[784, -1]"),
    (lambda meta: json.dumps({**meta, "layers": {**meta["layers"], "fc9": meta["layers"]["fc1"]}}),
     "holds no sparse kernel of shape (784, 300) for layer 'fc9'"),
])
def test_tampered_metadata_is_one_line_under_verify(change, expect, exported, tmp_path, capfd):
    export_dir = str(tmp_path / "1")
    shutil.copytree(exported, export_dir)
    _edit_metadata(export_dir, lambda meta: change(meta))
    before = tree(export_dir)
    code, out, err = cli(capfd, f"--verify={export_dir}")
    assert code == 1 and len(err) == 1 and err[0].startswith("lottery-export: error: "), err
    assert expect in err[0] and ("tf_lottery_export.json" in err[0] or "saved_model.pb" in err[0])
    assert tree(export_dir) == before


@pytest.mark.parametrize("name", ["ticket.data-00000-of-00001", "ticket.index"])
def test_truncated_checkpoint_is_one_line_before_anything_is_built(name, run, tmp_path, capfd, monkeypatch):
    damaged = tmp_path / "run"
    shutil.copytree(run, damaged)
    path = damaged / "round_01" / "checkpoint" / name
    os.truncate(path, path.stat().st_size // 2)
    from tf_lottery.export import loading

    monkeypatch.setattr(loading, "_build", lambda *a: pytest.fail("the model was built before the checkpoint was read"))
    line = refused(capfd, damaged, tmp_path / "serving", "--round=1",
                   expect=f"{damaged}/round_01/checkpoint/ticket is truncated or corrupted")
    assert f"delete {damaged}/round_01" in line
    assert not (tmp_path / "serving").exists()


@pytest.mark.slow
def test_truncated_checkpoint_costs_one_line_from_the_program(run, tmp_path):
    damaged = tmp_path / "run"
    shutil.copytree(run, damaged)
    path = damaged / "round_01" / "checkpoint" / "ticket.data-00000-of-00001"
    os.truncate(path, path.stat().st_size // 2)
    before = tree(damaged)
    done = program(f"--run_dir={damaged}", "--round=1", f"--export_base={tmp_path / 'serving'}")
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1 and "ticket is truncated or corrupted" in done.stderr  # no TF lines
    assert tree(damaged) == before and not (tmp_path / "serving").exists()


# -- the file system ---------------------------------------------------------------------------
@pytest.mark.parametrize("where, expect", [
    ("base", "export_base '{base}' exists and is not a directory"),
    ("name", "model_name 'lenet' exists and is not a directory"),
    ("parent", "export_base '{base}/sub' cannot be created: {base} is a file"),
])
def test_a_file_where_a_directory_is_expected(where, expect, run, tmp_path, capfd):
    base = tmp_path / "serving"
    if where == "name":
        base.mkdir()
        (base / "lenet").write_text("a file")
    else:
        base.write_text("a file")
    flags = {"base": [], "name": ["--model_name=lenet"], "parent": []}[where]
    target = base / "sub" if where == "parent" else base
    before = tree(base)
    code, out, err = cli(capfd, f"--run_dir={run}", f"--export_base={target}", *flags)
    assert code == 1 and len(err) == 1 and expect.format(base=base) in err[0], err
    assert tree(base) == before


@pytest.fixture
def mount(tmp_path):
    """Mount a tmpfs with the given options on a new folder (root only; skipped elsewhere)."""
    mounted = []

    def make(options: str):
        point = tmp_path / f"mount{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()[:80]})")
        mounted.append(point)
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


def test_read_only_export_base(run, tmp_path, capfd, mount):
    if os.geteuid() != 0:
        base = tmp_path / "read_only"
        base.mkdir()
        base.chmod(0o555)
    else:
        base = mount("ro,size=64k")
    refused(capfd, run, base, expect=f"cannot export into {base}: {base} is not writable")
    refused(capfd, run, base / "new", "--model_name=lenet", expect=f"{base} is not writable")


def test_full_disk_simulated_leaves_nothing(run, tmp_path, capfd, monkeypatch):
    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(files, "atomic_write_bytes", full)
    base = tmp_path / "serving"
    base.mkdir()
    refused(capfd, run, base, "--model_name=lenet", expect=f"cannot write {base}/lenet/1: No space left on device (free some space)")
    assert os.listdir(base) == []


def test_full_disk_for_real_leaves_nothing(run, capfd, mount):
    base = mount("size=300k")  # a dense Lenet-300-100 needs about 1 MB
    line = refused(capfd, run, base, expect="No space left on device (free some space)")
    assert f"cannot write {base}/1:" in line
    assert os.listdir(base) == []
