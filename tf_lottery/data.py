"""Datasets for lottery-ticket experiments: MNIST, Fashion-MNIST and CIFAR-10.

Splits. As in Frankle & Carbin (2019), 5,000 training examples are held out for
validation (early stopping): the first `validation_size` indices of a permutation
of the training set seeded with `split_seed` (independent of the run seed), so
every run and every pruning round sees the same validation set. Both parts are
sorted back into the source's order; the test set is the source's test set,
untouched. TFDS stores examples in its own shuffled order,
so a TFDS source and raw files give different (equally valid) validation sets.

Sources, tried in this order by `load(..., source='auto')`:
  1. a TFDS dataset already prepared under `data_dir` (or TFDS's default dir);
  2. local raw files: IDX files (MNIST format; Debian's Fashion-MNIST at
     /usr/share/datasets/fashion-mnist is found without flags) or the CIFAR-10
     binary version (cifar-10-batches-bin/*.bin; never the pickled one);
  3. a TFDS download, skipped when TF_LOTTERY_OFFLINE=1 or when the download host
     cannot be reached within a few seconds (offline, TFDS retries for minutes).

Pixels. `Splits` keeps images as uint8 (N, H, W, C) in memory; `tf_lottery.inputs`
scales them to float32 in [0, 1] (x / 255) inside the tf.data pipeline, with no
mean/std normalization. Raw files are read by `tf_lottery.data_files`.
"""

import dataclasses
import hashlib
import os
import socket
import threading
import urllib.parse
import urllib.request

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tf_lottery.data_files import (  # noqa: F401  (read_idx, read_cifar10_bin are re-exported)
    DEBIAN_FASHION_MNIST_DIR, NUM_CLASSES, IDX_FILES, CIFAR_DIR, CIFAR_TRAIN_FILES, CIFAR_TEST_FILE, load_local, local_dirs,
    read_cifar10_bin, read_idx,
)
from tf_lottery.errors import first_line

DATASETS = ("mnist", "fashion_mnist", "cifar10")
SOURCES = ("auto", "tfds", "local")
EVAL_BATCH_SIZE = 1000

OFFLINE_ENV = "TF_LOTTERY_OFFLINE"

_IMAGE_SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
# Where TFDS downloads each dataset from: probed before a download, which would
# otherwise retry for minutes on a machine without internet.
_DOWNLOAD_HOSTS = {
    "mnist": ("storage.googleapis.com", 443),
    "fashion_mnist": ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),
    "cifar10": ("www.cs.toronto.edu", 443),
}
_PROBE_TIMEOUT_S = 5.0

@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
    """Train / validation / test arrays: images uint8 (N, H, W, C), labels int64 (N,)."""

    train_images: np.ndarray
    train_labels: np.ndarray
    validation_images: np.ndarray
    validation_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int = NUM_CLASSES
    source: str = ""
    name: str = ""

    def __post_init__(self):
        shape = self.train_images.shape[1:]
        for split in ("train", "validation", "test"):
            images = getattr(self, f"{split}_images")
            labels = getattr(self, f"{split}_labels")
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != shape:
                raise ValueError(
                    f"{split}_images has dtype {images.dtype} and shape {images.shape}; "
                    f"expected uint8 (N, H, W, C) with (H, W, C) = {shape} in every split"
                )
            if labels.ndim != 1 or len(labels) != len(images):
                raise ValueError(
                    f"{split}_labels has shape {labels.shape}; expected ({len(images)},) "
                    f"to match {split}_images"
                )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image, as a model's input layer wants it."""
        return tuple(self.train_images.shape[1:])


def describe(splits: Splits) -> str:
    """One line for logs: sizes, image shape and where the data came from."""
    height, width, channels = splits.input_shape
    return (
        f"{splits.name or 'dataset'}: train {len(splits.train_labels)}, "
        f"validation {len(splits.validation_labels)}, test {len(splits.test_labels)}, "
        f"images {height}x{width}x{channels} uint8, {splits.num_classes} classes, "
        f"source {splits.source}"
    )


_FINGERPRINT_ARRAYS = (
    "train_images", "train_labels", "validation_images", "validation_labels", "test_images", "test_labels"
)


def fingerprint_arrays(arrays) -> str:
    """16 hex digits of a sha256 over named arrays: names, dtypes, shapes and bytes, in the given order."""
    digest = hashlib.sha256()
    for name, array in arrays.items():
        array = np.asarray(array)
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        digest.update(f"{name} {array.dtype.str} {array.shape};".encode())
        digest.update(array.reshape(-1).view(np.uint8))
    return digest.hexdigest()[:16]


def fingerprint(splits: Splits) -> str:
    """The fingerprint of the six arrays as loaded, independent of where they came from.

    Two copies of the same files agree; any changed label, pixel or split gives another value.
    Fashion-MNIST (55 MB): 0.04 s.
    """
    return fingerprint_arrays({name: getattr(splits, name) for name in _FINGERPRINT_ARRAYS})


def load(
    name: str,
    data_dir: str | None = None,
    validation_size: int = 5000,
    split_seed: int = 0,
    source: str = "auto",
) -> Splits:
    """Loads `name` and holds out `validation_size` training examples (see module doc)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    if source not in SOURCES:
        raise ValueError(f"unknown data source {source!r}; allowed: {', '.join(SOURCES)}")
    if validation_size < 0:
        raise ValueError(f"validation_size={validation_size} is negative; use 0 or more")

    if source == "tfds":
        train, test, origin = _load_tfds(name, data_dir, download=not _offline())
    elif source == "local":
        found = load_local(name, data_dir)
        if found is None:
            raise ValueError(
                f"dataset {name!r} has no local files: {_where_searched(name, data_dir)}. "
                f"{_how_to_provide(name)}"
            )
        train, test, origin = found
    else:
        train, test, origin = _load_auto(name, data_dir)

    expected_shape = _IMAGE_SHAPES[name]
    for split, (images, labels) in (("train", train), ("test", test)):
        if len(images) == 0:
            raise ValueError(f"dataset {name!r} from {origin} has an empty {split} split (0 examples)")
        if images.shape[1:] != expected_shape:
            raise ValueError(
                f"dataset {name!r} from {origin}: {split} images have shape {images.shape[1:]}, "
                f"expected {expected_shape}"
            )
        if labels.min() < 0 or labels.max() >= NUM_CLASSES:
            raise ValueError(
                f"dataset {name!r} from {origin}: {split} labels span {labels.min()}..{labels.max()}, "
                f"expected 0..{NUM_CLASSES - 1}"
            )
    train_images, train_labels = train
    if validation_size >= len(train_images):
        raise ValueError(
            f"validation_size={validation_size} leaves no training data: {name!r} has "
            f"{len(train_images)} training examples; use 0..{len(train_images) - 1}"
        )

    permutation = np.random.default_rng(split_seed).permutation(len(train_images))
    validation_index = np.sort(permutation[:validation_size])
    train_index = np.sort(permutation[validation_size:])
    return Splits(
        train_images=train_images[train_index],
        train_labels=train_labels[train_index],
        validation_images=train_images[validation_index],
        validation_labels=train_labels[validation_index],
        test_images=test[0],
        test_labels=test[1],
        num_classes=NUM_CLASSES,
        source=origin,
        name=name,
    )


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def _load_auto(name, data_dir):
    builder = tfds.builder(name, data_dir=data_dir)
    if _is_prepared(builder):
        return _load_tfds(name, data_dir, download=False)
    found = load_local(name, data_dir)
    if found is not None:
        return found
    if _offline():
        download_failure = f"skipped because {OFFLINE_ENV}=1"
    else:
        try:
            return _load_tfds(name, data_dir, download=True)
        except ValueError as error:
            download_failure = f"failed ({error})"
    raise ValueError(
        f"dataset {name!r} is not available: no prepared TFDS data in {builder.data_dir_root} "
        f"and no local files ({_where_searched(name, data_dir)}); TFDS download {download_failure}. "
        f"{_how_to_provide(name)}"
    )


def _load_tfds(name, data_dir, download):
    """Returns ((train_images, train_labels), (test_images, test_labels), source) from TFDS."""
    builder = tfds.builder(name, data_dir=data_dir)
    origin = f"tfds:{data_dir or builder.data_dir_root}"
    try:
        if download and not _is_prepared(builder):
            unreachable = _unreachable(*_DOWNLOAD_HOSTS[name])
            if unreachable:
                raise ValueError(unreachable)
            builder.download_and_prepare()
        train, test = builder.as_dataset(split=["train", "test"], as_supervised=True)
        arrays = tuple(_to_numpy(ds) for ds in (train, test))
    except Exception as error:  # TFDS raises many types (AssertionError, IOError, ...).
        raise ValueError(f"TFDS could not load {name!r} in {origin[5:]}: {first_line(error)}") from None
    return arrays[0], arrays[1], origin


def _is_prepared(builder) -> bool:
    # is_prepared() alone logs a warning when the folder does not exist.
    return builder.data_path.exists() and builder.is_prepared()


def _to_numpy(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    # Not tfds batch_size=-1: under tfds.testing.mock_data it batches by sys.maxsize
    # and aborts the process (std::length_error).
    images, labels = [], []
    for image_batch, label_batch in tfds.as_numpy(ds.batch(10_000)):
        images.append(image_batch)
        labels.append(label_batch)
    if not images:
        shape = tuple(d or 0 for d in ds.element_spec[0].shape.as_list())
        return np.zeros((0,) + shape, np.uint8), np.zeros((0,), np.int64)
    return np.concatenate(images).astype(np.uint8), np.concatenate(labels).astype(np.int64)


def _unreachable(host, port) -> str | None:
    """Why `host` (or the HTTPS/HTTP proxy) cannot be reached in a few seconds, or None."""
    proxy = urllib.request.getproxies().get("https" if port == 443 else "http")
    if proxy:
        parsed = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
        host, port = parsed.hostname, parsed.port or 80
    outcome = {}

    def connect():
        try:
            socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S).close()
        except OSError as error:
            outcome["error"] = error

    # A daemon thread bounds the DNS lookup too, which has no timeout of its own.
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(_PROBE_TIMEOUT_S + 1)
    if thread.is_alive():
        return f"no answer from {host}:{port} within {_PROBE_TIMEOUT_S:g} s"
    if "error" in outcome:
        return f"cannot reach {host}:{port}: {first_line(outcome['error'])}"
    return None


def _where_searched(name, data_dir) -> str:
    dirs = local_dirs(name, data_dir)
    return f"searched {', '.join(dirs)}" if dirs else "no --data_dir given"


def _how_to_provide(name) -> str:
    if name == "cifar10":
        files = f"{CIFAR_DIR}/ ({', '.join(CIFAR_TRAIN_FILES)}, {CIFAR_TEST_FILE}; the binary version)"
    else:
        files = ", ".join(f + ".gz" for f in IDX_FILES)
    return (
        f"Run once on a machine with internet (tfds.load({name!r}, data_dir=DIR)) "
        f"or pass --data_dir=DIR holding {files}"
    )
