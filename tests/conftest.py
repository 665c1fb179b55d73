"""Shared test set-up: tests never try to download anything."""

import os

os.environ.setdefault("TF_LOTTERY_OFFLINE", "1")
