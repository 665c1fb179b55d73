"""The inputs of a search: training batches from any iteration, and exact validation and test sets.

Sources: `Splits` from `tf_lottery.data` (uint8 images, scaled to [0, 1]); NumPy `(x, y)` tuples
(used as they are; x may be a dict of arrays for a model with several inputs); or the user's
`tf.data` datasets, batched or not. With arrays the training order is a pure function of
(seed, iteration), so resuming mid-network is exact; a user's tf.data pipeline keeps its own
order (a resumed network replays it from its start).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional

import numpy as np
import tensorflow as tf



@dataclasses.dataclass
class Inputs:
    """Training batches from iteration i on, exact validation and test sets, and what they hold."""

    train_from: Callable[[int, int], tf.data.Dataset]  # (seed, start_iteration) -> batches
    validation: tf.data.Dataset
    test: tf.data.Dataset
    steps_per_epoch: Optional[int]  # training batches in one pass (None: unknown)
    one_hot: bool
    name: str
    fingerprint: Optional[str] = None  # of the arrays; None for a user's tf.data pipeline
    input_spec: Any = None  # shape of one example (or a dict of them)
    num_classes: Optional[int] = None
    # A few training batches (NumPy) for data-dependent scores: sample(count, seed, balanced), see `score_sample`.
    sample: Callable[..., list] = lambda count, seed=0, balanced=False: []
    data_source: dict = dataclasses.field(default_factory=dict)  # where the data came from (see `data.Splits`)
    can_balance: bool = True  # sample(..., balanced=True) draws per class (False: a pipeline's first batches)

    def total_iterations(self, config) -> int:
        """Iterations of one network: `config.iterations`, or `config.epochs` passes over the data."""
        if config.iterations:
            return int(config.iterations)
        if not self.steps_per_epoch:
            raise ValueError("set iterations: the training dataset's length is unknown, so epochs cannot be counted")
        return int(config.epochs) * self.steps_per_epoch


# -- pipelines -------------------------------------------------------------------------------------
def train_batches(
    images, labels, batch_size: int, seed: int, start_iteration: int = 0, scale: bool = True
) -> tf.data.Dataset:
    """Endless training batches whose order depends only on (seed, iteration).

    Epoch e is a stateless shuffle seeded by (seed, e); starting at iteration i skips whole
    epochs arithmetically and only i mod steps_per_epoch index batches. `images` may be an
    array or a dict of arrays (several inputs); uint8 images are scaled to [0, 1] when `scale`.
    """
    n = len(labels)
    if n == 0:
        raise ValueError("the training set is empty; allowed: at least one example")
    steps_per_epoch = math.ceil(n / batch_size)
    first_epoch, offset = divmod(int(start_iteration), steps_per_epoch)
    images_t = tf.nest.map_structure(tf.constant, images)
    labels_t = tf.constant(labels)

    def epoch_indices(epoch):
        order = tf.argsort(tf.random.stateless_uniform([n], seed=tf.stack([tf.cast(seed, tf.int64), epoch])))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    def gather(index):
        x = tf.nest.map_structure(lambda t: _to_float(tf.gather(t, index), scale), images_t)
        return x, tf.gather(labels_t, index)

    return (
        tf.data.Dataset.range(first_epoch, 2**62)
        .flat_map(epoch_indices)
        .skip(offset)
        .map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def eval_batches(images, labels, batch_size: int = 1000, scale: bool = True) -> tf.data.Dataset:
    """All examples once, in order, none dropped: evaluation is exact."""
    return (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .batch(batch_size)
        .map(lambda x, y: (tf.nest.map_structure(lambda t: _to_float(t, scale), x), y))
        .cache()
        .prefetch(tf.data.AUTOTUNE)
    )


def _to_float(tensor, scale: bool):
    if tensor.dtype == tf.uint8 and scale:
        return tf.cast(tensor, tf.float32) / 255.0
    return tensor


_SCORE_STREAM = 0x5C0E  # keeps the score sample's draws apart from every other use of the run's seed


def balanced_indices(labels, total: int, seed: int) -> np.ndarray:
    """`total` example indices with as equal a number per class as the classes allow, drawn with `seed`.

    Each class is shuffled by one seeded generator and the classes are taken round-robin (one
    example of each in turn, a class that runs out dropping from the cycle), so 240 examples of a
    10-class set hold 24 of each; the result is shuffled so a batch mixes classes. Labels are class
    indices or one-hot rows.
    """
    labels = np.asarray(labels)
    classes = labels.argmax(axis=1) if labels.ndim == 2 and labels.shape[1] > 1 else labels.reshape(len(labels))
    rng = np.random.default_rng([int(seed), _SCORE_STREAM])
    pools = [rng.permutation(np.flatnonzero(classes == c)) for c in np.unique(classes)]
    total = min(int(total), len(classes))
    depth = max(len(p) for p in pools)
    grid = np.full((depth, len(pools)), -1, dtype=np.int64)  # row i: the i-th example of every class
    for column, pool in enumerate(pools):
        grid[: len(pool), column] = pool
    order = grid.reshape(-1)
    return rng.permutation(order[order >= 0][:total])


def score_sample(x, y, batch_size: int, count: int, seed: int, balanced: bool, scale: bool) -> list:
    """`count` batches for a data-dependent score: class-balanced from `seed` when `balanced`, else the first
    batches of seed 0's training order (what runs before 0.3 scored)."""
    if not balanced:
        return as_numpy_batches(train_batches(x, y, batch_size, 0, 0, scale=scale), count)
    index = balanced_indices(y, count * batch_size, seed)
    pick = lambda a: _to_float(tf.constant(np.asarray(a)[index]), scale).numpy()
    xs, ys = tf.nest.map_structure(pick, x), np.asarray(y)[index]
    return [(tf.nest.map_structure(lambda a: a[i: i + batch_size], xs), ys[i: i + batch_size])
            for i in range(0, len(index), batch_size)]


def as_numpy_batches(dataset: tf.data.Dataset, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first `count` batches of a dataset as NumPy (for data-dependent pruning scores)."""
    return [(x.numpy() if hasattr(x, "numpy") else x, y.numpy()) for x, y in dataset.take(count)]


# -- sources -----------------------------------------------------------------------------------------
def _one_hot(labels: np.ndarray) -> bool:
    return labels.ndim == 2 and labels.shape[1] > 1


def _fingerprint(**splits) -> str:
    """The data fingerprint (`data.fingerprint_arrays`) of the arrays actually trained and evaluated on."""
    from tf_lottery.data import datasets as data  # TFDS: not for a user's own arrays

    named = {}
    for name, value in splits.items():
        if isinstance(value, dict):
            named.update({f"{name}/{key}": value[key] for key in sorted(value)})
        else:
            named[name] = value
    return data.fingerprint_arrays(named)


def from_arrays(train, validation, test, batch_size: int, scale: bool, name: str,
                num_classes: Optional[int] = None, fingerprint: Optional[str] = None,
                data_source: Optional[dict] = None) -> Inputs:
    """Inputs from `(x, y)` pairs of arrays (x an array or a dict of arrays)."""
    parts = {"train": train, "validation": validation, "test": test}
    for split, pair in parts.items():
        if pair is None:
            if split == "validation":
                raise ValueError(
                    "pass validation=(x, y): early stopping selects on the validation set, never on the test set"
                )
            raise ValueError(f"pass {split}=(x, y)")
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"{split} must be an (x, y) pair of arrays or a tf.data.Dataset, not {type(pair).__name__}")
        x, y = pair
        count = {len(v) for v in tf.nest.flatten(x)}
        if count != {len(y)}:
            raise ValueError(f"{split} has {sorted(count)} inputs but {len(y)} labels; they must match")
        if len(y) == 0:
            raise ValueError(f"the {split} set is empty; allowed: at least one example")
    (x, y), (vx, vy), (tx, ty) = train, validation, test
    first = tf.nest.map_structure(lambda a: tuple(np.shape(a)[1:]), x)

    def train_from(seed, start):
        return train_batches(x, y, batch_size, seed, start, scale=scale)

    def sample(count, seed=0, balanced=False):
        return score_sample(x, y, batch_size, count, seed, balanced, scale)

    return Inputs(
        train_from=train_from,
        validation=eval_batches(vx, vy, scale=scale),
        test=eval_batches(tx, ty, scale=scale),
        steps_per_epoch=math.ceil(len(y) / batch_size),
        one_hot=_one_hot(np.asarray(y)),
        name=name,
        fingerprint=fingerprint or _fingerprint(train_images=x, train_labels=y, validation_images=vx,
                                                validation_labels=vy, test_images=tx, test_labels=ty),
        input_spec=first,
        num_classes=num_classes,
        sample=sample,
        data_source=data_source or {"kind": "arrays", "chosen": "the caller's NumPy arrays"},
    )


def from_splits(splits, batch_size: int, train_subset: Optional[int] = None, fingerprint: Optional[str] = None) -> Inputs:
    """Inputs from `tf_lottery.data.Splits` (uint8 images scaled to [0, 1])."""
    train_x, train_y = splits.train_images, splits.train_labels
    if train_subset:
        train_x, train_y = train_x[:train_subset], train_y[:train_subset]
    if len(train_y) == 0:
        raise ValueError("the training set is empty; allowed: at least one example")
    if batch_size > len(train_y):  # every batch would silently be the whole, smaller, training set
        subset = f" (train_subset={train_subset})" if train_subset else ""
        raise ValueError(f"batch_size={batch_size} is more than the {len(train_y)} training examples{subset}; "
                         f"allowed: 1..{len(train_y)}")
    if len(splits.validation_labels) == 0:
        raise ValueError("the validation set is empty; allowed: validation_size >= 1 (early stopping needs it)")
    if len(splits.test_labels) == 0:
        raise ValueError("the test set is empty; allowed: at least one example")
    return from_arrays(
        (train_x, train_y),
        (splits.validation_images, splits.validation_labels),
        (splits.test_images, splits.test_labels),
        batch_size,
        scale=True,
        name=getattr(splits, "name", "") or getattr(splits, "source", "arrays"),
        num_classes=int(getattr(splits, "num_classes", 10)),
        fingerprint=fingerprint,
        data_source=getattr(splits, "data_source", None) or {"kind": "splits", "chosen": "the caller's Splits"},
    )


def _batched(dataset: tf.data.Dataset, example_rank: Optional[int], batch_size: int, eval_batch: bool) -> tf.data.Dataset:
    """The dataset batched, when its elements are single examples (rank of one example known)."""
    x_spec = tf.nest.flatten(dataset.element_spec[0])[0]
    unbatched = x_spec.shape.rank == example_rank if example_rank is not None else (
        x_spec.shape.rank and x_spec.shape[0] is not None)  # .batch() leaves the batch dimension unknown
    return dataset.batch(1000 if eval_batch else batch_size) if unbatched else dataset


def from_datasets(train, validation, test, batch_size: int, example_rank: Optional[int]) -> Inputs:
    """Inputs from the user's tf.data datasets of (x, y), batched or not (batched here with `batch_size`)."""
    for split, ds in (("train", train), ("validation", validation), ("test", test)):
        if ds is None:
            if split == "validation":
                raise ValueError(
                    "pass validation=...: early stopping selects on the validation set, never on the test set"
                )
            raise ValueError(f"pass {split}=... together with train=...")
        if not isinstance(ds, tf.data.Dataset):
            raise ValueError(f"{split} must be a tf.data.Dataset when train is one, not {type(ds).__name__}")
        spec = ds.element_spec
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise ValueError(f"{split} must yield (x, y) pairs; it yields {spec}")
    train = _batched(train, example_rank, batch_size, eval_batch=False)
    validation = _batched(validation, example_rank, batch_size, eval_batch=True)
    test = _batched(test, example_rank, batch_size, eval_batch=True)
    cardinality = int(train.cardinality().numpy())
    if cardinality == 0:
        raise ValueError("the training dataset is empty; allowed: at least one batch")
    y_spec = train.element_spec[1]
    one_hot = y_spec.shape.rank == 2 and (y_spec.shape[-1] or 0) > 1
    repeated = train.repeat()
    return Inputs(
        train_from=lambda seed, start: repeated,
        validation=validation,
        test=test,
        steps_per_epoch=cardinality if cardinality > 0 else None,
        one_hot=one_hot,
        name="user datasets",
        input_spec=tf.nest.map_structure(lambda s: tuple(s.shape[1:]), train.element_spec[0]),
        # A user's pipeline is read in its own order: its first batches (see `levels.Search.prune_inputs`).
        sample=lambda count, seed=0, balanced=False: as_numpy_batches(train, count),
        data_source={"kind": "tf.data", "chosen": "the caller's datasets"},
        can_balance=False,
    )


def from_config(config, splits=None) -> Inputs:
    """The dataset `config.data` names, loaded as it says (or the `splits` given, e.g. the user's arrays)."""
    if splits is None:
        from tf_lottery.data import datasets as data_lib  # TFDS: not for a user's own arrays

        data = config.data
        splits = data_lib.load(data.dataset, data_dir=data.data_dir, validation_size=data.validation_size)
    return from_splits(splits, config.training.batch_size, config.data.train_subset)
