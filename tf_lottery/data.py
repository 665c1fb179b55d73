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

Pixels. `Splits` keeps images as uint8 (N, H, W, C) in memory; `make_datasets`
scales them to float32 in [0, 1] (x / 255) inside the tf.data pipeline, with no
mean/std normalization.
"""

import dataclasses
import gzip
import hashlib
import math
import os
import socket
import threading
import urllib.parse
import urllib.request
import zlib

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

DATASETS = ("mnist", "fashion_mnist", "cifar10")
NUM_CLASSES = 10
SOURCES = ("auto", "tfds", "local")
EVAL_BATCH_SIZE = 1000

OFFLINE_ENV = "TF_LOTTERY_OFFLINE"
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

_IMAGE_SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
# Where TFDS downloads each dataset from: probed before a download, which would
# otherwise retry for minutes on a machine without internet.
_DOWNLOAD_HOSTS = {
    "mnist": ("storage.googleapis.com", 443),
    "fashion_mnist": ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),
    "cifar10": ("www.cs.toronto.edu", 443),
}
_PROBE_TIMEOUT_S = 5.0

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# IDX type byte -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

_CIFAR_DIR = "cifar-10-batches-bin"
_CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_TEST_FILE = "test_batch.bin"
_CIFAR_RECORD_BYTES = 1 + 32 * 32 * 3


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
        found = _load_local(name, data_dir)
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


def make_datasets(
    splits: Splits, batch_size: int, seed: int, shuffle_buffer: int | None = None
) -> tuple[tf.data.Dataset, tf.data.Dataset, tf.data.Dataset]:
    """(train, validation, test) pipelines of float32 images in [0, 1] and int64 labels.

    train is shuffled with `seed` (a new order each pass), batched without dropping
    the remainder, and repeats forever: the trainer counts iterations, not epochs.
    validation and test are unshuffled, finite and complete, for exact evaluation.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    if shuffle_buffer is not None and shuffle_buffer < 1:
        raise ValueError(f"shuffle_buffer={shuffle_buffer} must be at least 1 (or None for the full train set)")
    num_train = len(splits.train_labels)
    if num_train == 0:
        raise ValueError("splits have 0 training examples; make_datasets needs at least 1")

    train = (
        tf.data.Dataset.from_tensor_slices((splits.train_images, splits.train_labels))
        .shuffle(shuffle_buffer or num_train, seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .map(_scale, num_parallel_calls=tf.data.AUTOTUNE)
        .repeat()
        .prefetch(tf.data.AUTOTUNE)
    )
    validation = _eval_dataset(splits.validation_images, splits.validation_labels)
    test = _eval_dataset(splits.test_images, splits.test_labels)
    return train, validation, test


def read_idx(path: str) -> np.ndarray:
    """Reads one IDX file (gzipped or raw, told apart by content) into a numpy array."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise ValueError(f"cannot read IDX file {path}: {_first_line(error)}") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise ValueError(f"{path} is not an IDX file: bad magic number {data[:4].hex() or '(empty)'}")
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(f"IDX file {path} is truncated: {len(data)} bytes, header alone needs {header_size}")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    # Python ints: numpy's int64 product wraps (2**16 four times is 0).
    expected = header_size + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"IDX file {path} is truncated or corrupted: {len(data)} bytes, shape {shape} needs {expected}"
        )
    return np.frombuffer(data, dtype, offset=header_size).reshape(shape).astype(dtype.newbyteorder("="))


def read_cifar10_bin(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Reads one CIFAR-10 binary batch: records of 1 label byte + 3072 CHW pixel bytes."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise ValueError(f"cannot read CIFAR-10 file {path}: {_first_line(error)}") from None
    if len(data) == 0 or len(data) % _CIFAR_RECORD_BYTES:
        raise ValueError(
            f"CIFAR-10 file {path} is truncated or corrupted: {len(data)} bytes is not a "
            f"positive multiple of {_CIFAR_RECORD_BYTES}"
        )
    records = np.frombuffer(data, np.uint8).reshape(-1, _CIFAR_RECORD_BYTES)
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), records[:, 0].astype(np.int64)


def _scale(images, labels):
    return tf.cast(images, tf.float32) / 255.0, labels


def _eval_dataset(images: np.ndarray, labels: np.ndarray) -> tf.data.Dataset:
    return (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .batch(EVAL_BATCH_SIZE)
        .map(_scale, num_parallel_calls=tf.data.AUTOTUNE)
        .cache()
        .prefetch(tf.data.AUTOTUNE)
    )


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def _first_line(error: BaseException, limit: int = 200) -> str:
    text = str(error).strip().splitlines()
    text = text[0] if text else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _load_auto(name, data_dir):
    builder = tfds.builder(name, data_dir=data_dir)
    if _is_prepared(builder):
        return _load_tfds(name, data_dir, download=False)
    found = _load_local(name, data_dir)
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
        raise ValueError(f"TFDS could not load {name!r} in {origin[5:]}: {_first_line(error)}") from None
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


def _local_dirs(name, data_dir) -> list[str]:
    """Directories searched for raw files, in order."""
    dirs = []
    if data_dir:
        subdirs = (_CIFAR_DIR, os.path.join(name, _CIFAR_DIR)) if name == "cifar10" else (name.replace("_", "-"),)
        dirs = [data_dir] + [os.path.join(data_dir, sub) for sub in (name,) + subdirs]
    if name == "fashion_mnist":
        dirs.append(DEBIAN_FASHION_MNIST_DIR)
    return list(dict.fromkeys(dirs))


def _load_local(name, data_dir):
    """Reads raw files from the first directory holding a complete set, or returns None."""
    for directory in _local_dirs(name, data_dir):
        if name == "cifar10":
            paths = [os.path.join(directory, f) for f in _CIFAR_TRAIN_FILES + (_CIFAR_TEST_FILE,)]
            if all(os.path.isfile(p) for p in paths):
                batches = [read_cifar10_bin(p) for p in paths]
                for (_, labels), path in zip(batches, paths):
                    _check_labels(labels, path)
                train = np.concatenate([b[0] for b in batches[:-1]]), np.concatenate([b[1] for b in batches[:-1]])
                return train, batches[-1], f"cifar-bin:{directory}"
        else:
            paths = [_find_idx(directory, base) for base in _IDX_FILES]
            if all(paths):
                arrays = [read_idx(p) for p in paths]
                train = _idx_pair(arrays[0], arrays[1], paths[0], paths[1])
                test = _idx_pair(arrays[2], arrays[3], paths[2], paths[3])
                return train, test, f"idx:{directory}"
    return None


def _find_idx(directory, base):
    for candidate in (base + ".gz", base):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def _idx_pair(images, labels, images_path, labels_path):
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"IDX file {images_path} holds {images.dtype} {images.shape}; expected uint8 (N, H, W)")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(
            f"IDX file {labels_path} holds shape {labels.shape}; expected ({len(images)},) to match {images_path}"
        )
    _check_labels(labels, labels_path)
    return images[..., np.newaxis], labels.astype(np.int64)


def _check_labels(labels: np.ndarray, path: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(
            f"labels in {path} span {labels.min()}..{labels.max()}; allowed: 0..{NUM_CLASSES - 1}"
        )


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
        return f"cannot reach {host}:{port}: {_first_line(outcome['error'])}"
    return None


def _where_searched(name, data_dir) -> str:
    dirs = _local_dirs(name, data_dir)
    return f"searched {', '.join(dirs)}" if dirs else "no --data_dir given"


def _how_to_provide(name) -> str:
    if name == "cifar10":
        files = f"{_CIFAR_DIR}/ ({', '.join(_CIFAR_TRAIN_FILES)}, {_CIFAR_TEST_FILE}; the binary version)"
    else:
        files = ", ".join(f + ".gz" for f in _IDX_FILES)
    return (
        f"Run once on a machine with internet (tfds.load({name!r}, data_dir=DIR)) "
        f"or pass --data_dir=DIR holding {files}"
    )
