"""The CLIs' shared start-up: one line on stderr for a user error (no TensorFlow start-up lines),
tracebacks of real bugs still shown, and SIGTERM handled like Ctrl-C."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

PYTHON = sys.executable
ENV = dict(os.environ, TF_LOTTERY_OFFLINE="1")


def run(args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, timeout=180, env=ENV, **kwargs)


def test_report_error_is_exactly_one_line():
    result = run([PYTHON, "-m", "tf_lottery.cli.report", "--run_dir=/nonexistent"])
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "lottery-report: error: run_dir '/nonexistent' does not exist or is not a directory"
    ]


def test_export_error_is_exactly_one_line(tmp_path):
    result = run([PYTHON, "-m", "tf_lottery.cli.export", "--run_dir=/nonexistent", f"--export_base={tmp_path / 'x'}"])
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "lottery-export: error: run_dir '/nonexistent' does not exist or is not a directory"
    ]
    assert not (tmp_path / "x").exists()


def test_export_verbose_shows_what_tensorflow_says_at_start_up(tmp_path):
    bare = run([PYTHON, "-c", "import tf_lottery, tensorflow as tf; tf.config.list_physical_devices()"])
    result = run(
        [PYTHON, "-m", "tf_lottery.cli.export", "--verbose", "--run_dir=/nonexistent", f"--export_base={tmp_path}"]
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[-1] == "lottery-export: error: run_dir '/nonexistent' does not exist or is not a directory"
    assert len(lines) - 1 >= len(bare.stderr.splitlines())


def script(body: str) -> list[str]:
    return [PYTHON, "-c", "import sys, time\nfrom tf_lottery.cli import common\n" + textwrap.dedent(body)]


def test_tracebacks_of_real_bugs_still_show():
    after = run(script("common.quiet_tensorflow()\nraise RuntimeError('a bug after start-up')"))
    assert after.returncode == 1
    assert "Traceback" in after.stderr and after.stderr.splitlines()[-1] == "RuntimeError: a bug after start-up"
    # Python's own lines written inside the silenced block are lost, but an exception leaving it is not.
    inside = run(script("with common.native_stderr_silenced():\n    raise RuntimeError('a bug in start-up')"))
    assert inside.stderr.splitlines()[-1] == "RuntimeError: a bug in start-up"
    assert inside.stderr.splitlines()[0] == "Traceback (most recent call last):"


def test_quiet_tensorflow_leaves_the_runtime_unstarted():
    """Logical devices (mirrored on CPUs), multi-worker and TPU strategies must be set up before it starts."""
    result = run(script("""
        common.quiet_tensorflow()
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        print(len(tf.config.list_logical_devices("CPU")))
    """))
    assert result.stdout.split() == ["2"], result.stderr
    assert result.stderr == ""


def test_report_does_not_import_tensorflow():
    result = run([PYTHON, "-c", "import sys, tf_lottery.cli.report, tf_lottery.report; print('tensorflow' in sys.modules)"])
    assert result.stdout.split() == ["False"], result.stderr


# SIGTERM ---------------------------------------------------------------------------------------
# lottery-find's main, reduced to what matters here: a long run inside try/except KeyboardInterrupt.
FIND_LIKE = """
    common.raise_on_sigterm()
    try:
        print("running", flush=True)
        while True:
            time.sleep(0.05)
    except KeyboardInterrupt as e:
        print("lottery-find: interrupted; rerun the same command to resume runs/x", file=sys.stderr)
        sys.exit(common.interrupted_status(e))
"""


def start_and_signal(*signals):
    process = subprocess.Popen(script(FIND_LIKE), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    assert process.stdout.readline() == "running\n"
    for number in signals:
        process.send_signal(number)
        time.sleep(0.2)
    stdout, stderr = process.communicate(timeout=60)
    return process.returncode, stderr


@pytest.mark.parametrize("number, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_prints_the_same_line_as_ctrl_c(number, status):
    returncode, stderr = start_and_signal(number)
    assert returncode == status
    assert stderr.splitlines() == ["lottery-find: interrupted; rerun the same command to resume runs/x"]


def test_a_second_sigterm_ends_the_process_at_once():
    """While the first one's handling runs (here: never ends), a second TERM kills as by default."""
    hang = FIND_LIKE.replace('print("lottery-find: interrupted', 'time.sleep(60); print("lottery-find: interrupted')
    process = subprocess.Popen(script(hang), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    assert process.stdout.readline() == "running\n"
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGTERM


# lottery-find itself.
def test_find_error_is_exactly_one_line(tmp_path):
    result = run([PYTHON, "-m", "tf_lottery.cli.find", "--rounds=0", f"--output_dir={tmp_path / 'run'}"])
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["lottery-find: error: rounds=0 must be an integer in 1..10000"]


def test_find_sigterm_prints_the_interrupt_line(tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen(
        [PYTHON, "-m", "tf_lottery.cli.find", "--iterations=3000", "--rounds=2", "--train_subset=600", "--quiet",
         f"--output_dir={out}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )
    deadline = time.monotonic() + 120
    while not (out / "config.json").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    time.sleep(1)  # into training
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143
    assert stderr.splitlines() == [f"lottery-find: interrupted; rerun the same command to resume {out}"]


def test_which_errors_are_one_line_by_their_class():
    """User errors are matched by class (ValueError, tf_lottery.errors.UserError and its subclasses, TF's
    environment errors), not by class-name strings; anything else is a bug and keeps its traceback."""
    import tensorflow as tf

    from tf_lottery.cli import errors
    from tf_lottery.errors import UserError
    from tf_lottery.search.distribute import WorkerLostError
    from tf_lottery.search.training import TrainingDiverged

    assert errors.message(TrainingDiverged("the loss became NaN at iteration 7\ndetails")) == (
        "the loss became NaN at iteration 7")
    assert errors.message(WorkerLostError("worker 1 is gone")) == "worker 1 is gone"

    class TrainingDiverged2(RuntimeError):  # the same name pattern, not a UserError: a bug
        pass

    assert errors.message(TrainingDiverged2("x")) is None
    assert errors.message(type("TrainingDiverged", (RuntimeError,), {})("same name")) is None
    assert errors.message(type("Mine", (UserError,), {})("one line")) == "one line"
    full = tf.errors.ResourceExhaustedError(None, None, "no space left on device")
    assert errors.message(full, resume="runs/x") == (
        "no space left on device (ResourceExhaustedError); then rerun the same command to resume runs/x")
    assert errors.message(RuntimeError("a bug")) is None
