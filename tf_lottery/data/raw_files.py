"""Raw dataset files read without TFDS: MNIST-format IDX files (plain or gzipped) and the CIFAR-10
binary batches (never the pickled version). Every damaged file is one ValueError naming it."""

from __future__ import annotations

import gzip
import math
import os
import zlib

import numpy as np

from tf_lottery.errors import first_line

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
NUM_CLASSES = 10

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# IDX type byte -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

CIFAR_DIR = "cifar-10-batches-bin"
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch.bin"
_CIFAR_RECORD_BYTES = 1 + 32 * 32 * 3


def read_idx(path: str) -> np.ndarray:
    """Reads one IDX file (gzipped or raw, told apart by content) into a numpy array."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise ValueError(f"cannot read IDX file {path}: {first_line(error)}") from None
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
        raise ValueError(f"cannot read CIFAR-10 file {path}: {first_line(error)}") from None
    if len(data) == 0 or len(data) % _CIFAR_RECORD_BYTES:
        raise ValueError(
            f"CIFAR-10 file {path} is truncated or corrupted: {len(data)} bytes is not a "
            f"positive multiple of {_CIFAR_RECORD_BYTES}"
        )
    records = np.frombuffer(data, np.uint8).reshape(-1, _CIFAR_RECORD_BYTES)
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), records[:, 0].astype(np.int64)


def local_dirs(name, data_dir) -> list[str]:
    """Directories searched for raw files, in order: under the user's `data_dir` only, when one is
    given (a mistyped path must not fall back to other data); else the system copy, if any."""
    if data_dir:
        subdirs = (CIFAR_DIR, os.path.join(name, CIFAR_DIR)) if name == "cifar10" else (name.replace("_", "-"),)
        return list(dict.fromkeys([data_dir] + [os.path.join(data_dir, sub) for sub in (name,) + subdirs]))
    return [DEBIAN_FASHION_MNIST_DIR] if name == "fashion_mnist" else []


def file_names(name) -> tuple[str, ...]:
    """The raw files that make up `name` (IDX files may also be gzipped: NAME.gz)."""
    return CIFAR_TRAIN_FILES + (CIFAR_TEST_FILE,) if name == "cifar10" else IDX_FILES


def found_files(name, directory) -> list[str]:
    """The paths of `name`'s raw files in `directory`, one per file that is there."""
    if name == "cifar10":
        paths = [os.path.join(directory, f) for f in file_names(name)]
        return [p for p in paths if os.path.isfile(p)]
    return [p for p in (_find_idx(directory, base) for base in IDX_FILES) if p]


def load_local(name, data_dir):
    """((train), (test), origin, paths) from the first directory holding a complete set, or None."""
    for directory in local_dirs(name, data_dir):
        paths = found_files(name, directory)
        if len(paths) != len(file_names(name)):
            continue
        if name == "cifar10":
            batches = [read_cifar10_bin(p) for p in paths]
            for (_, labels), path in zip(batches, paths):
                _check_labels(labels, path)
            train = np.concatenate([b[0] for b in batches[:-1]]), np.concatenate([b[1] for b in batches[:-1]])
            return train, batches[-1], f"cifar-bin:{directory}", paths
        arrays = [read_idx(p) for p in paths]
        train = _idx_pair(arrays[0], arrays[1], paths[0], paths[1])
        test = _idx_pair(arrays[2], arrays[3], paths[2], paths[3])
        return train, test, f"idx:{directory}", paths
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


def source_line(record: dict, files: bool = False) -> str:
    """A data source record in a few words, for the first line of a run; with `files`, also each file's
    sha256 (its first 12 digits), for reports."""
    if not record:
        return "unknown source"
    kind = {"idx": "IDX files", "cifar-bin": "CIFAR-10 binary files", "tfds": "TFDS"}.get(record.get("kind"), record.get("kind"))
    version = f" {record['version']}" if record.get("version") else ""
    where = f" in {record['path']}" if record.get("path") else ""
    chosen = f", {record['chosen']}" if record.get("chosen") else ""
    listed = ""
    if files and record.get("files"):
        listed = "; files " + ", ".join(
            f"{f['name']}" + (f" (sha256 {f['sha256'][:12]})" if f.get("sha256") else "") for f in record["files"])
    return f"{kind}{version}{where}{chosen}{listed}"
