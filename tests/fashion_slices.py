"""Small slices of the real Fashion-MNIST (Debian's files), shared by the real-data tests."""

import functools
import types

import numpy as np

from tf_lottery.data import datasets as data


@functools.lru_cache(maxsize=1)
def _full():
    return data.load("fashion_mnist", source="local")


def fashion_slice(train: int = 3000, validation: int = 500, test: int = 1000):
    """A Splits-like object holding the first `train`/`validation`/`test` examples of each split."""
    full = _full()
    return types.SimpleNamespace(
        train_images=full.train_images[:train],
        train_labels=full.train_labels[:train],
        validation_images=full.validation_images[:validation],
        validation_labels=full.validation_labels[:validation],
        test_images=full.test_images[:test],
        test_labels=full.test_labels[:test],
        num_classes=10,
        source="fashion_mnist slice",
        input_shape=tuple(full.train_images.shape[1:]),
    )


def as_float(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255.0
