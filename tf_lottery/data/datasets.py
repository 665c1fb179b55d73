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
A `data_dir` the user gives must exist and hold the dataset (1 or 2 under it): the
fallbacks (the system copy, TFDS's default dir, a download) apply only without one, so a
mistyped path is refused in one line instead of training on other data. Every `Splits`
carries `data_source` (kind, path, how it was chosen, file names and sha256), which runs
record in config.json and summary.json.

Pixels. `Splits` keeps images as uint8 (N, H, W, C) in memory; `tf_lottery.data.inputs`
scales them to float32 in [0, 1] (x / 255) inside the tf.data pipeline, with no
mean/std normalization. Raw files are read by `tf_lottery.data.raw_files`.
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

from tf_lottery.data.raw_files import (  # noqa: F401  (read_idx, read_cifar10_bin, source_line are re-exported)
    DEBIAN_FASHION_MNIST_DIR, NUM_CLASSES, IDX_FILES, CIFAR_DIR, CIFAR_TRAIN_FILES, CIFAR_TEST_FILE, file_names,
    found_files, load_local, local_dirs, read_cifar10_bin, read_idx, source_line,
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
    # Where the arrays came from, as runs record it: kind, path, how it was chosen, files and sha256.
    data_source: dict = dataclasses.field(default_factory=dict)

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

    if data_dir is not None:
        _check_data_dir(name, data_dir)
    if source == "tfds":
        train, test, origin, record = _load_tfds(name, data_dir, download=not _offline() and data_dir is None)
    elif source == "local":
        found = load_local(name, data_dir)
        if found is None:
            raise ValueError(
                f"dataset {name!r} has no local files: {_where_searched(name, data_dir)}. "
                f"{_how_to_provide(name)}"
            )
        train, test, origin, record = _local_record(name, data_dir, found)
    else:
        train, test, origin, record = _load_auto(name, data_dir)

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
        data_source=record,
    )


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def _load_auto(name, data_dir):
    builder = tfds.builder(name, data_dir=data_dir)
    if _is_prepared(builder):
        return _load_tfds(name, data_dir, download=False)
    found = load_local(name, data_dir)
    if found is not None:
        return _local_record(name, data_dir, found)
    if data_dir is not None:  # _check_data_dir found the data; this is only reached if it vanished since
        raise ValueError(_not_in_data_dir(name, data_dir))
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


def _check_data_dir(name, data_dir) -> None:
    """A `data_dir` the user names must exist and hold `name`: a mistyped path never falls back to other data."""
    if not os.path.exists(data_dir):
        raise ValueError(f"data_dir={data_dir!r} does not exist; give the folder holding {name!r} "
                         f"({_what_is_looked_for(name)}), or leave data_dir out to use {_fallbacks(name)}")
    if not os.path.isdir(data_dir):
        raise ValueError(f"data_dir={data_dir!r} is not a directory; give the folder holding {name!r} "
                         f"({_what_is_looked_for(name)})")
    if _is_prepared(tfds.builder(name, data_dir=data_dir)):
        return
    if any(len(found_files(name, d)) == len(file_names(name)) for d in local_dirs(name, data_dir)):
        return
    raise ValueError(_not_in_data_dir(name, data_dir))


def _not_in_data_dir(name, data_dir) -> str:
    partial = [(d, found_files(name, d)) for d in local_dirs(name, data_dir)]
    partial = [(d, found) for d, found in partial if found]
    if partial:
        directory, found = partial[0]
        have = {os.path.basename(p).removesuffix(".gz") for p in found}
        missing = [f for f in file_names(name) if f not in have]
        return (f"data_dir={data_dir!r} holds only part of {name!r}: {directory} lacks {', '.join(missing)}; "
                f"give a folder with all of {', '.join(file_names(name))}")
    listing = sorted(os.listdir(data_dir))
    held = "is empty" if not listing else f"holds {', '.join(listing[:5])}{', ...' if len(listing) > 5 else ''}"
    return (f"data_dir={data_dir!r} {held}, not {name!r}: looked for {_what_is_looked_for(name)} "
            f"in {', '.join(local_dirs(name, data_dir))}; give the folder that holds them")


def _what_is_looked_for(name) -> str:
    builder = tfds.builder(name)
    raw = (f"{CIFAR_DIR}/{{{', '.join(file_names(name))}}}" if name == "cifar10"
           else ", ".join(f"{f}[.gz]" for f in IDX_FILES))
    return f"TFDS data prepared as {name}/{builder.version}, or the raw files {raw}"


def _fallbacks(name) -> str:
    system = f"the system copy in {DEBIAN_FASHION_MNIST_DIR}, else " if name == "fashion_mnist" else ""
    return f"{system}TFDS's default folder or a TFDS download"


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(paths) -> list[dict]:
    return [{"name": os.path.basename(p), "bytes": os.path.getsize(p), "sha256": _sha256(p)} for p in paths]


def _local_record(name, data_dir, found):
    train, test, origin, paths = found
    directory = os.path.dirname(paths[0])
    record = {"kind": origin.split(":", 1)[0], "path": os.path.abspath(directory),
              "chosen": "data_dir" if data_dir is not None else "system copy (no data_dir given)",
              "files": _files(paths)}
    return train, test, origin, record


def _tfds_files(directory) -> list[dict]:
    """The prepared dataset's record files with their sha256 (names only where they are not local files)."""
    if not tf.io.gfile.isdir(str(directory)):
        return []
    paths = sorted(os.path.join(str(directory), f) for f in tf.io.gfile.listdir(str(directory)) if ".tfrecord" in f)
    return _files(paths) if all(os.path.isfile(p) for p in paths) else [{"name": os.path.basename(p)} for p in paths]


def _load_tfds(name, data_dir, download):
    """((train_images, train_labels), (test_images, test_labels), origin, record) from TFDS."""
    builder = tfds.builder(name, data_dir=data_dir)
    origin = f"tfds:{data_dir or builder.data_dir_root}"
    downloaded = False
    try:
        if download and not _is_prepared(builder):
            unreachable = _unreachable(*_DOWNLOAD_HOSTS[name])
            if unreachable:
                raise ValueError(unreachable)
            builder.download_and_prepare()
            downloaded = True
        train, test = builder.as_dataset(split=["train", "test"], as_supervised=True)
        arrays = tuple(_to_numpy(ds) for ds in (train, test))
        files = _tfds_files(builder.data_dir)
    except Exception as error:  # TFDS raises many types (AssertionError, IOError, ...).
        raise ValueError(f"TFDS could not load {name!r} in {origin[5:]}: {first_line(error)}") from None
    chosen = "data_dir" if data_dir is not None else "TFDS download" if downloaded else "TFDS's default folder (no data_dir given)"
    record = {"kind": "tfds", "path": os.path.abspath(str(builder.data_dir)) if "://" not in str(builder.data_dir)
              else str(builder.data_dir), "version": str(builder.version), "chosen": chosen, "files": files}
    return arrays[0], arrays[1], origin, record


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
