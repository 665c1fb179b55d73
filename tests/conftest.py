"""Shared test set-up: tests never try to download anything."""

import os

os.environ.setdefault("TF_LOTTERY_OFFLINE", "1")

import tf_lottery  # noqa: E402,F401  (quiets TensorFlow's C++ logs before any test module imports it)

# The longest test files, started first: under `pytest -n 2 --dist loadfile --no-loadscope-reorder` (the
# README's test command, which keeps this order instead of putting the files with most tests first) a
# long file started last would keep one worker busy minutes after the other is done.
LONGEST_FIRST = ("test_real_data.py", "test_readme.py", "test_resume.py", "test_golden.py", "test_multi_worker.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _op_determinism_stays_in_its_module():
    """A deterministic search turns on TensorFlow's op determinism for the whole process (as a user's
    `--deterministic` run should). Under `-n 2 --dist loadfile` the next file of that worker would
    inherit it, and some kernels (XLA MaxPool gradients) refuse to run under it: restore it per module."""
    from tensorflow.python.framework import config as tf_config

    before = tf_config.is_op_determinism_enabled()
    yield
    if tf_config.is_op_determinism_enabled() and not before:
        tf_config.disable_op_determinism()
