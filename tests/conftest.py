"""Shared test set-up: tests never try to download anything."""

import os

os.environ.setdefault("TF_LOTTERY_OFFLINE", "1")

import tf_lottery  # noqa: E402,F401  (quiets TensorFlow's C++ logs before any test module imports it)
