"""Entry point of every Bazel py_test: runs pytest on the test file given as its argument.

Our tests are pytest-style (plain functions, fixtures, marks), so Bazel runs them through pytest.
"""

import os
import sys

import pytest


def main(argv: list[str]) -> int:
    """Run pytest on argv's files from the runfiles tree and return Bazel's exit code."""
    # Console scripts (lottery-find) live next to the venv python; Bazel's test PATH lacks them.
    bin_dir = os.path.dirname(sys.executable)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    # The runfiles tree is read-only: no .pytest_cache; tmp_path lives in Bazel's TEST_TMPDIR.
    args = ["-p", "no:cacheprovider", "-q", *argv]
    only = os.environ.get("TESTBRIDGE_TEST_ONLY")  # bazel test --test_filter=EXPR
    if only:
        args += ["-k", only]
    xml = os.environ.get("XML_OUTPUT_FILE")
    if xml:
        args.append(f"--junitxml={xml}")
    code = pytest.main(args)
    filtered = only or "-m" in os.environ.get("PYTEST_ADDOPTS", "")
    if code == pytest.ExitCode.NO_TESTS_COLLECTED and filtered:
        return 0  # Every test of this file was deselected (--config=fast, --test_filter).
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
