"""scripts/setup.sh: its syntax, and what a dry run (DRY_RUN=1) would install on a fresh Debian machine."""

import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "setup.sh")
HAS_FASHION = os.path.exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def test_syntax():
    subprocess.run(["bash", "-n", SCRIPT], check=True)


def write_executable(path, text):
    path.write_text(text)
    path.chmod(0o755)


def dry_run(tmp_path, ensurepip=True, uid=1000, venv="none", option="--test"):
    """Run a copy of setup.sh (so that .venv is looked for in tmp_path) with a fake python3.11 and id."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / "setup.sh")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    block = "" if ensurepip else '*"import ensurepip"*) exit 1;;'
    write_executable(fake_bin / "python3.11", f'#!/bin/sh\ncase "$*" in {block} *) ;; esac\nexec {sys.executable} "$@"\n')
    write_executable(fake_bin / "id", f"#!/bin/sh\necho {uid}\n")
    for command in ("apt-get", "sudo"):  # should the dry run ever run them, the system stays as it is
        write_executable(fake_bin / command, f"#!/bin/sh\necho 'ran {command}' >&2; exit 1\n")
    if venv != "none":  # fakes: nothing here may touch a real environment
        (tmp_path / ".venv" / "bin").mkdir(parents=True)
        pip = "echo 'pip 24.0'" if venv == "working" else "echo 'No module named pip' >&2; exit 1"
        write_executable(tmp_path / ".venv" / "bin" / "python", f"#!/bin/sh\n{pip}\n")
    env = dict(os.environ, DRY_RUN="1", PATH=f"{fake_bin}:/usr/bin:/bin")
    result = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "setup.sh"), option], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_fresh_debian_without_ensurepip_installs_python3_11_venv_with_sudo(tmp_path):
    packages = ("" if HAS_FASHION else "dataset-fashion-mnist ") + "python3.11-venv"
    assert dry_run(tmp_path, ensurepip=False, uid=1000) == [
        f"would run: sudo apt-get install -y -qq {packages}",
        f"would run: {tmp_path}/bin/python3.11 -m venv --clear .venv",
        "would run: .venv/bin/python -m pip install -q --upgrade pip",
        "would run: .venv/bin/python -m pip install -q -e .[test]",
    ]


def test_root_installs_without_sudo(tmp_path):
    lines = dry_run(tmp_path, ensurepip=False, uid=0)
    assert lines[0].startswith("would run: apt-get install -y -qq ") and lines[0].endswith(" python3.11-venv")


def test_a_venv_left_without_pip_is_made_again(tmp_path):
    lines = dry_run(tmp_path, ensurepip=True, venv="without_pip")
    assert f"would run: {tmp_path}/bin/python3.11 -m venv --clear .venv" in lines
    assert not any("python3.11-venv" in line for line in lines)


def test_a_second_run_installs_nothing_new(tmp_path):
    lines = dry_run(tmp_path, ensurepip=True, venv="working")
    expected = [] if HAS_FASHION else ["would run: sudo apt-get install -y -qq dataset-fashion-mnist"]
    assert lines == expected + [
        "would run: .venv/bin/python -m pip install -q --upgrade pip",
        "would run: .venv/bin/python -m pip install -q -e .[test]",
    ]


def test_serving_adds_tensorflow_serving_api(tmp_path):
    """docs/serving.md (and docs/setup.md): lottery-export --warmup needs the [serving] extra, which --serving adds."""
    lines = dry_run(tmp_path, ensurepip=True, venv="working", option="--serving")
    assert lines[-1] == "would run: .venv/bin/python -m pip install -q -e .[serving]"


def test_another_python_is_refused_in_one_line(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPT, tmp_path / "scripts" / "setup.sh")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    write_executable(fake_bin / "python3.11", f'#!/bin/sh\nexec {sys.executable} -c "import sys; sys.version_info = (3, 13, 0); sys.version = \'3.13.0\'; exec(sys.argv[1])" "$2"\n')
    result = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "setup.sh")], capture_output=True, text=True, timeout=60,
        env=dict(os.environ, DRY_RUN="1", PATH=f"{fake_bin}:/bin"),
    )
    assert result.returncode == 1
    assert result.stderr.startswith("setup.sh: error: tf_lottery needs Python 3.11, found 3.13.0")
    assert len(result.stderr.splitlines()) == 1
