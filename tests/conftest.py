"""Shared test set-up: tests never try to download anything."""

import os

os.environ.setdefault("TF_LOTTERY_OFFLINE", "1")

import tf_lottery  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before any test module imports TensorFlow)
