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
