"""TensorFlow checkpoints of a run: each round's trained ticket, and the network being trained.

Paths come from `RunDirectory`; every read is checked in full (index and data) and a failure is
one `CorruptRunError` line naming the files and how to recover.
"""

from __future__ import annotations

import os

import tensorflow as tf

from tf_lottery.search.run_directory import CorruptRunError, RunDirectory, atomic_directory, atomic_write_json


def ticket_checkpoint(model) -> tf.train.Checkpoint:
    """A checkpoint of the model's layers (weights and masks) without its optimizer.

    Rooted at the layers rather than the model so that a compiled model's optimizer state is
    neither saved nor restored later by TensorFlow's deferred restoration into a fresh optimizer.
    """
    return tf.train.Checkpoint(layers=list(model.layers))


def training_checkpoint(model) -> tf.train.Checkpoint:
    """Model and optimizer: what a network cut off mid-way needs to continue exactly."""
    return tf.train.Checkpoint(model=model, optimizer=model.optimizer)


def save_round(run: RunDirectory, round_index: int, model) -> None:
    """The trained weights and masks of a round's ticket, written atomically."""
    with atomic_directory(run.checkpoint_dir(round_index)) as tmp:
        ticket_checkpoint(model).write(os.path.join(tmp, "ticket"))


def restore_round(run: RunDirectory, round_index: int, model) -> None:
    """Load a round's trained weights and masks into a wrapped model of the same architecture."""
    prefix = run.checkpoint_prefix(round_index)
    _restore(ticket_checkpoint(model), prefix, f"delete {run.round_dir(round_index)} to retrain round {round_index}")


def check_readable(prefix: str, fix: str) -> None:
    """Read every tensor of a checkpoint (index and data) without restoring it anywhere."""
    if not tf.io.gfile.exists(prefix + ".index"):
        raise CorruptRunError(f"{prefix}.index is missing; {fix}")
    try:
        reader = tf.train.load_checkpoint(prefix)
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except Exception as e:  # noqa: BLE001  (TF raises OpError, IndexError, ValueError... for damaged files)
        raise CorruptRunError(f"{prefix} is truncated or corrupted ({type(e).__name__}); {fix}") from e


def save_progress(run: RunDirectory, state: dict, model) -> None:
    """A mid-training checkpoint (model, optimizer) and its state, in one atomic directory."""
    with atomic_directory(run.progress_dir) as tmp:
        training_checkpoint(model).write(os.path.join(tmp, "state"))
        atomic_write_json(os.path.join(tmp, "state.json"), state)


def restore_progress(run: RunDirectory, state: dict, model) -> None:
    """Load the mid-training checkpoint; its optimizer's step counter must agree with state.json."""
    fix = f"delete {run.progress_dir} to restart that network from its beginning"
    _restore(training_checkpoint(model), run.progress_prefix, fix)
    step = int(model.optimizer.iterations.numpy())
    if step != state["iteration"]:
        raise CorruptRunError(
            f"{run.progress_dir}/state.json says iteration {state['iteration']} but its checkpoint holds "
            f"iteration {step}; {fix}"
        )


def progress_step(prefix: str) -> int:
    """The optimizer's step counter stored in a mid-training checkpoint (state.json's second witness)."""
    reader = tf.train.load_checkpoint(prefix)
    suffixes = ("/_iterations/.ATTRIBUTES/VARIABLE_VALUE", "/iter/.ATTRIBUTES/VARIABLE_VALUE")  # current, legacy
    keys = sorted((k for k in reader.get_variable_to_shape_map() if k.startswith("optimizer/") and k.endswith(suffixes)),
                  key=len)
    if not keys:
        raise CorruptRunError(f"{prefix} holds no optimizer step counter; delete its folder to restart that network")
    return int(reader.get_tensor(keys[0]))  # the outermost optimizer's (a LossScaleOptimizer wraps another)


def _restore(checkpoint: tf.train.Checkpoint, prefix: str, fix: str) -> None:
    check_readable(prefix, fix)
    try:
        checkpoint.read(prefix).assert_existing_objects_matched()
    except Exception as e:  # noqa: BLE001
        raise CorruptRunError(f"{prefix} is missing, corrupted or from another model ({type(e).__name__}); {fix}") from e
