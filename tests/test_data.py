"""Datasets: real Fashion-MNIST from Debian, IDX and CIFAR-10 binary readers, the TFDS path
(mocked, offline), error messages, and the tf.data pipelines."""

import gzip
import hashlib
import os
import struct

os.environ["TF_LOTTERY_OFFLINE"] = "1"  # Never let a test try to download.

import numpy as np
import pytest

import tf_lottery  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TF loads)
import tensorflow_datasets as tfds

from tf_lottery.data import datasets as data

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
needs_fashion = pytest.mark.skipif(
    not os.path.isdir(FASHION_DIR), reason="Debian package dataset-fashion-mnist not installed"
)


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file holding a uint8 array: magic 0x0000 08 ndim, big-endian dims, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(directory, train_count=6, test_count=3, compress=True, seed=0):
    """A complete tiny MNIST-format set; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (train_count, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, train_count, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (test_count, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, test_count, dtype=np.uint8),
    }
    os.makedirs(directory, exist_ok=True)
    for base, array in arrays.items():
        content = idx_bytes(array)
        path = os.path.join(directory, base + (".gz" if compress else ""))
        with open(path, "wb") as f:
            f.write(gzip.compress(content) if compress else content)
    return arrays


def row_hashes(images: np.ndarray) -> list[str]:
    return [hashlib.sha1(row.tobytes()).hexdigest() for row in images]


@pytest.fixture(scope="module")
def fashion():
    return data.load("fashion_mnist")


# Real Fashion-MNIST -------------------------------------------------------------------


@needs_fashion
def test_fashion_mnist_loads_from_debian_without_flags(fashion):
    assert fashion.source == f"idx:{FASHION_DIR}"
    assert fashion.train_images.shape == (55000, 28, 28, 1)
    assert fashion.validation_images.shape == (5000, 28, 28, 1)
    assert fashion.test_images.shape == (10000, 28, 28, 1)
    assert fashion.input_shape == (28, 28, 1)
    assert fashion.num_classes == 10
    for images, labels in [
        (fashion.train_images, fashion.train_labels),
        (fashion.validation_images, fashion.validation_labels),
        (fashion.test_images, fashion.test_labels),
    ]:
        assert images.dtype == np.uint8
        assert labels.dtype == np.int64
        assert set(np.unique(labels)) == set(range(10))
    assert data.describe(fashion) == (
        "fashion_mnist: train 55000, validation 5000, test 10000, images 28x28x1 uint8, "
        f"10 classes, source idx:{FASHION_DIR}"
    )


@needs_fashion
def test_fashion_mnist_split_is_deterministic_disjoint_and_complete(fashion):
    again = data.load("fashion_mnist")
    np.testing.assert_array_equal(again.validation_images, fashion.validation_images)
    np.testing.assert_array_equal(again.train_labels, fashion.train_labels)

    original = data.read_idx(os.path.join(FASHION_DIR, "train-images-idx3-ubyte.gz"))
    original_rows = [(h, i) for i, h in enumerate(row_hashes(original))]
    # Fashion-MNIST has a few duplicate images, so compare multisets of row hashes.
    train_rows = row_hashes(fashion.train_images[..., 0])
    validation_rows = row_hashes(fashion.validation_images[..., 0])
    assert sorted(train_rows + validation_rows) == sorted(h for h, _ in original_rows)
    duplicates = len(original_rows) - len({h for h, _ in original_rows})
    assert len(set(train_rows) & set(validation_rows)) <= duplicates

    other_seed = data.load("fashion_mnist", split_seed=1, validation_size=100)
    assert len(other_seed.validation_labels) == 100
    assert len(other_seed.train_labels) == 59900


# IDX and CIFAR-10 readers ---------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_read_idx_gives_exact_arrays(tmp_path, compress):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("images.gz" if compress else "images")
    content = idx_bytes(images)
    path.write_bytes(gzip.compress(content) if compress else content)
    result = data.read_idx(str(path))
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, images)


def test_read_idx_handles_wider_types(tmp_path):
    path = tmp_path / "ints"
    path.write_bytes(bytes([0, 0, 0x0C, 1]) + struct.pack(">I", 3) + struct.pack(">3i", -1, 0, 70000))
    np.testing.assert_array_equal(data.read_idx(str(path)), [-1, 0, 70000])


@pytest.mark.parametrize(
    "content",
    [
        idx_bytes(np.zeros((2, 3, 4), np.uint8))[:-1],  # truncated data
        idx_bytes(np.zeros((2, 3, 4), np.uint8))[:10],  # truncated header
        b"\x08\x03\x00\x00" + bytes(40),  # wrong magic
        b"",
        gzip.compress(idx_bytes(np.zeros((2, 3, 4), np.uint8)), mtime=0)[:20],  # truncated gzip
    ],
)
def test_read_idx_rejects_corrupted_files_naming_them(tmp_path, content):
    path = tmp_path / "broken-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="broken-idx3-ubyte") as error:
        data.read_idx(str(path))
    assert "\n" not in str(error.value)


def corrupt_gzip(content: bytes) -> bytes:
    """A gzip member whose deflate stream is garbage: gzip.decompress raises zlib.error."""
    compressed = gzip.compress(content, mtime=0)
    return compressed[:10] + b"\xff" * 20 + compressed[30:]


@pytest.mark.parametrize(
    "content",
    [
        corrupt_gzip(idx_bytes(np.zeros((2, 3, 4), np.uint8))),
        # Dims whose product is 2**64: wraps to 0 in int64 arithmetic.
        bytes([0, 0, 0x08, 4]) + struct.pack(">4I", 2**16, 2**16, 2**16, 2**16),
        bytes([0, 0, 0x0C, 2]) + struct.pack(">2I", 2**32 - 1, 2**32 - 1) + bytes(16),
        # Absurd dims (a 0 hides the product) with data after the header.
        bytes([0, 0, 0x08, 2]) + struct.pack(">2I", 0, 2**32 - 1) + bytes(8),
    ],
    ids=["corrupt-gzip", "dims-wrap-to-zero", "dims-overflow-int32", "zero-dim-with-data"],
)
def test_read_idx_rejects_bad_gzip_and_headers_in_one_line_naming_the_file(tmp_path, content):
    path = tmp_path / "broken-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="broken-idx3-ubyte.gz") as error:
        data.read_idx(str(path))
    assert "\n" not in str(error.value)
    assert type(error.value) is ValueError


def test_load_rejects_a_label_file_of_another_length_naming_it(tmp_path):
    write_idx_set(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.zeros(5, np.uint8))))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte.gz holds shape \(5,\); expected \(3,\)"):
        data.load("mnist", data_dir=str(tmp_path), validation_size=2)


def test_load_rejects_labels_out_of_range_naming_the_file(tmp_path):
    write_idx_set(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(idx_bytes(np.array([0, 1, 2, 10, 3, 4], np.uint8))))
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz") as error:
        data.load("mnist", data_dir=str(tmp_path), validation_size=2)
    assert "0..10" in str(error.value) and "0..9" in str(error.value)


def test_load_local_idx_from_data_dir(tmp_path):
    arrays = write_idx_set(tmp_path / "mnist", compress=False)
    splits = data.load("mnist", data_dir=str(tmp_path), validation_size=2)
    assert splits.source == f"idx:{tmp_path / 'mnist'}"
    assert splits.train_images.shape == (4, 28, 28, 1)
    assert splits.validation_images.shape == (2, 28, 28, 1)
    np.testing.assert_array_equal(splits.test_images[..., 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(splits.test_labels, arrays["t10k-labels-idx1-ubyte"])
    # Validation and train rows together are exactly the training file, each once.
    rows = np.concatenate([splits.train_images, splits.validation_images])[..., 0]
    assert sorted(row_hashes(rows)) == sorted(row_hashes(arrays["train-images-idx3-ubyte"]))


def test_load_local_rejects_corrupted_idx_naming_the_file(tmp_path):
    write_idx_set(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(gzip.decompress(labels.read_bytes())[:-2]))
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz"):
        data.load("mnist", data_dir=str(tmp_path), validation_size=2)


def test_load_rejects_bad_validation_sizes(tmp_path):
    write_idx_set(tmp_path)
    with pytest.raises(ValueError, match="validation_size=6"):
        data.load("mnist", data_dir=str(tmp_path), validation_size=6)
    with pytest.raises(ValueError, match="validation_size=-1"):
        data.load("mnist", data_dir=str(tmp_path), validation_size=-1)
    empty_validation = data.load("mnist", data_dir=str(tmp_path), validation_size=0)
    assert empty_validation.validation_images.shape == (0, 28, 28, 1)
    assert len(empty_validation.train_labels) == 6


def test_load_rejects_an_empty_dataset(tmp_path):
    write_idx_set(tmp_path, train_count=0)
    with pytest.raises(ValueError, match="empty train split"):
        data.load("mnist", data_dir=str(tmp_path), validation_size=0)


def cifar_records(labels, rng):
    """CIFAR-10 binary records and the CHW pixel arrays they hold."""
    pixels = rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
    records = [bytes([label]) + image.tobytes() for label, image in zip(labels, pixels)]
    return b"".join(records), pixels


def test_read_cifar10_bin_transposes_chw_to_hwc(tmp_path):
    content, pixels = cifar_records([3, 7], np.random.default_rng(0))
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(content)
    images, labels = data.read_cifar10_bin(str(path))
    assert images.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(labels, [3, 7])
    # Record 1, row 5, column 9, blue: byte 1 + 2*1024 + 5*32 + 9 of the second record.
    assert images[1, 5, 9, 2] == content[3073 + 1 + 2 * 1024 + 5 * 32 + 9]
    np.testing.assert_array_equal(images, pixels.transpose(0, 2, 3, 1))

    path.write_bytes(content[:-1])
    with pytest.raises(ValueError, match="data_batch_1.bin"):
        data.read_cifar10_bin(str(path))


def test_load_local_cifar10_binary_version(tmp_path):
    rng = np.random.default_rng(1)
    directory = tmp_path / "cifar-10-batches-bin"
    directory.mkdir()
    for i in range(1, 6):
        (directory / f"data_batch_{i}.bin").write_bytes(cifar_records([i, 9 - i], rng)[0])
    test_content, test_pixels = cifar_records([0, 1, 2], rng)
    (directory / "test_batch.bin").write_bytes(test_content)
    splits = data.load("cifar10", data_dir=str(tmp_path), validation_size=3)
    assert splits.source == f"cifar-bin:{directory}"
    assert splits.train_images.shape == (7, 32, 32, 3)
    assert splits.validation_images.shape == (3, 32, 32, 3)
    assert splits.input_shape == (32, 32, 3)
    np.testing.assert_array_equal(splits.test_images, test_pixels.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(splits.test_labels, [0, 1, 2])
    assert sorted(np.concatenate([splits.train_labels, splits.validation_labels])) == sorted(
        [i for i in range(1, 6)] + [9 - i for i in range(1, 6)]
    )


# TFDS path (mocked) and errors ------------------------------------------------------------


@pytest.mark.parametrize("name, shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_source_with_mock_data(name, shape):
    # No data_dir: a data_dir the user names must hold prepared data, and the mock prepares none.
    with tfds.testing.mock_data(num_examples=20):
        splits = data.load(name, source="tfds", validation_size=5)
    assert splits.source.startswith("tfds:")
    assert splits.data_source["kind"] == "tfds" and splits.data_source["version"]
    assert splits.data_source["chosen"] == "TFDS's default folder (no data_dir given)"
    assert splits.train_images.shape == (15, *shape)
    assert splits.validation_images.shape == (5, *shape)
    assert splits.test_images.shape == (20, *shape)
    assert splits.train_images.dtype == np.uint8
    assert splits.train_labels.dtype == np.int64
    assert splits.test_labels.min() >= 0 and splits.test_labels.max() <= 9


def test_unknown_dataset_lists_known_names():
    with pytest.raises(ValueError, match=r"^unknown dataset 'foo'; known datasets: cifar10, fashion_mnist, mnist$"):
        data.load("foo")
    with pytest.raises(ValueError, match="unknown data source 'web'"):
        data.load("mnist", source="web")


def test_unavailable_mnist_offline_explains_how_to_provide_it():
    with pytest.raises(ValueError) as error:
        data.load("mnist")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("dataset 'mnist' is not available")
    assert "TF_LOTTERY_OFFLINE=1" in message
    assert "--data_dir=DIR holding train-images-idx3-ubyte.gz" in message


@pytest.mark.parametrize("source", ["auto", "local", "tfds"])
def test_an_empty_data_dir_is_refused_whatever_the_source(tmp_path, source):
    with pytest.raises(ValueError) as error:
        data.load("cifar10", data_dir=str(tmp_path), source=source)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"data_dir={str(tmp_path)!r} is empty, not 'cifar10'")
    assert "cifar-10-batches-bin/{data_batch_1.bin" in message


def test_tfds_source_offline_without_prepared_data_fails_fast():
    with pytest.raises(ValueError, match=r"TFDS could not load 'mnist'") as error:
        data.load("mnist", source="tfds")
    assert "\n" not in str(error.value)


# tf.data pipelines ---------------------------------------------------------------------------


def tiny_splits(train=10, validation=5, test=7):
    rng = np.random.default_rng(0)

    def part(count):
        return rng.integers(0, 256, (count, 4, 4, 1), dtype=np.uint8), np.arange(count, dtype=np.int64)

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = part(train), part(validation), part(test)
    train_x[0] = 255  # so that the maximum pixel is exactly 1.0
    return data.Splits(train_x, train_y, val_x, val_y, test_x, test_y, num_classes=10, source="test", name="tiny")


def test_splits_rejects_mismatched_arrays():
    x = np.zeros((3, 4, 4, 1), np.uint8)
    y = np.zeros(3, np.int64)
    with pytest.raises(ValueError, match="validation_labels"):
        data.Splits(x, y, x, y[:2], x, y)
    with pytest.raises(ValueError, match="test_images"):
        data.Splits(x, y, x, y, x.astype(np.float32), y)


def test_load_rejects_cifar10_labels_out_of_range_naming_the_file(tmp_path):
    rng = np.random.default_rng(2)
    directory = tmp_path / "cifar-10-batches-bin"
    directory.mkdir()
    for i in range(1, 6):
        (directory / f"data_batch_{i}.bin").write_bytes(cifar_records([i, 200 if i == 4 else 0], rng)[0])
    (directory / "test_batch.bin").write_bytes(cifar_records([0, 1], rng)[0])
    with pytest.raises(ValueError, match=r"labels in .*data_batch_4.bin span 4..200; allowed: 0..9$"):
        data.load("cifar10", data_dir=str(tmp_path), validation_size=3)


# Fingerprint ----------------------------------------------------------------------------------


def test_fingerprint_is_the_same_for_two_copies_and_changes_with_one_label(tmp_path):
    write_idx_set(tmp_path / "a", seed=3)
    write_idx_set(tmp_path / "b", seed=3, compress=False)  # same arrays, other files
    first = data.load("mnist", data_dir=str(tmp_path / "a"), validation_size=2)
    copy = data.load("mnist", data_dir=str(tmp_path / "b"), validation_size=2)
    assert first.source != copy.source
    assert data.fingerprint(first) == data.fingerprint(copy)
    assert len(data.fingerprint(first)) == 16 and int(data.fingerprint(first), 16) >= 0

    labels = tmp_path / "b" / "t10k-labels-idx1-ubyte"
    content = bytearray(labels.read_bytes())
    content[-1] = (content[-1] + 1) % 10
    labels.write_bytes(bytes(content))
    changed = data.load("mnist", data_dir=str(tmp_path / "b"), validation_size=2)
    assert data.fingerprint(changed) != data.fingerprint(first)
    # The split is part of what was loaded: another validation set is other data.
    assert data.fingerprint(data.load("mnist", data_dir=str(tmp_path / "a"), validation_size=3)) != (
        data.fingerprint(first)
    )


def test_fingerprint_covers_shapes_and_dtypes():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 2, 2, 1), dtype=np.uint8)
    labels = np.arange(4, dtype=np.int64)
    empty = images[:0], labels[:0]
    base = data.Splits(images, labels, *empty, images, labels)
    # Same bytes, other shape: (4, 2, 2, 1) vs (4, 4, 1, 1).
    reshaped = data.Splits(images.reshape(4, 4, 1, 1), labels, empty[0].reshape(0, 4, 1, 1), empty[1],
                           images.reshape(4, 4, 1, 1), labels)
    assert data.fingerprint(base) != data.fingerprint(reshaped)
    # Same values, other label dtype.
    narrow = data.Splits(images, labels.astype(np.int32), *empty, images, labels)
    assert data.fingerprint(base) != data.fingerprint(narrow)
    # Train and test swapped around an empty validation split is not the same data.
    moved = data.Splits(images[:2], labels[:2], *empty, images, labels)
    assert data.fingerprint(base) != data.fingerprint(moved)


@needs_fashion
def test_fingerprint_of_full_fashion_mnist_is_fast(fashion):
    import time

    start = time.perf_counter()
    value = data.fingerprint(fashion)
    elapsed = time.perf_counter() - start
    assert value == data.fingerprint(fashion)
    assert elapsed < 1.0, f"fingerprint took {elapsed:.3f} s"
