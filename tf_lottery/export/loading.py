"""Rebuild a round's trained ticket from a run directory, for export and verification.

The architecture is, in order: the `model` argument; the user's model recorded in config.json
(`record["architecture"]`, tf-keras JSON); the zoo model named in the config. Runs written
before version 0.2 record neither source nor architecture: they were zoo runs on the dataset's
image shape. Everything that can be checked before the model is built is checked first
(summary, config, the round's checkpoint read in full), so a damaged run costs one line.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Union

import numpy as np
import tf_keras as keras

from tf_lottery.config import ExperimentConfig
from tf_lottery.errors import first_line
from tf_lottery.export.layout import CHECK_EXAMPLES
from tf_lottery.masking import masks as mask_math
from tf_lottery.masking import pruning
from tf_lottery.search import building, checkpoints
from tf_lottery.search.run_checks import select_round
from tf_lottery.search.run_directory import RunDirectory

ModelSource = Union[keras.Model, Callable[..., keras.Model], None]
DATASET_SHAPES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
_NEEDS_MODEL = "pass model= (your model, or a function building it) to tf_lottery.export.export_ticket or load_ticket"


@dataclasses.dataclass
class LoadedTicket:
    """A round's trained ticket rebuilt from a run directory."""

    wrapped: keras.Model
    round: int
    masks: dict[str, np.ndarray]
    config: ExperimentConfig
    run_dir: str
    model_name: str = ""  # the zoo name, or the name of the user's model

    @property
    def weights_remaining(self) -> float:
        return mask_math.weights_remaining(self.masks)


def load_ticket(run_dir: str, round: Union[str, int] = "best", model: ModelSource = None, input_shape=None) -> LoadedTicket:
    """Rebuild the model of `run_dir`, wrap it and restore round `round`'s trained weights and masks.

    Args:
      run_dir: a run directory written by `find_ticket` / lottery-find.
      round: 'best', 'last' or a round number.
      model: the run's model (a tf-keras model or a function building one), needed only when the
        run's own model cannot be rebuilt from config.json (custom layer classes).
      input_shape: the zoo model's input shape, for runs that record none (default: the dataset's).

    Raises:
      ValueError: no such run or round, a damaged checkpoint, or a model that does not fit, in one line.
    """
    run, record, index = _open_round(run_dir, round)
    fix = f"delete {run.round_dir(index)} and rerun lottery-find with the same flags to retrain round {index}"
    checkpoints.check_readable(run.checkpoint_prefix(index), fix)  # reads the data too, before building
    wrapped, described, shape = rebuild(record, model, input_shape)
    try:
        checkpoints.restore_round(run, index, wrapped)
    except ValueError as e:
        raise ValueError(f"{first_line(e)}; the model rebuilt is {described} on inputs {shape}") from e
    masks = pruning.get_masks(wrapped)
    saved = run.load_masks(index, pruning.kernel_shapes(wrapped)) if index > 0 else None
    if saved is not None and any(not np.array_equal(saved[k], masks[k]) for k in masks):
        raise ValueError(f"round {index} of {run_dir!r}: the checkpoint's masks differ from masks.npz; {fix}")
    name = record.get("model", {}).get("name") if _is_user_run(record) else record["experiment"].model.model
    return LoadedTicket(wrapped=wrapped, round=index, masks=masks, config=record["experiment"],
                        run_dir=run.path, model_name=str(name or ""))


def _open_round(run_dir: str, which) -> tuple[RunDirectory, dict, int]:
    run = RunDirectory.existing(run_dir)
    summary = run.read_summary()
    record = run.read_record()
    return run, record, select_round(summary["rounds"], which)


def rebuild(record: dict, model: ModelSource = None, input_shape=None) -> tuple[keras.Model, str, tuple]:
    """A run's network rebuilt (from `model`, else its config.json) and wrapped, its pruned kernels checked
    against the run's: (wrapped model, how to name it in errors, input shape). Weights are not restored."""
    shape = _input_shape(record, input_shape)
    built, described = _build(model, record, shape)
    wrapped = pruning.wrap(built, warn=False)
    _check_kernels(wrapped, record, described)
    return wrapped, described, shape


def _is_user_run(record: dict) -> bool:
    return isinstance(record.get("model"), dict) and record["model"].get("source") == "user"


def _input_shape(record: dict, given) -> tuple:
    if given is not None:
        return tuple(int(d) for d in given)
    recorded = record.get("model", {}).get("input_shape") if isinstance(record.get("model"), dict) else None
    if recorded:
        return tuple(int(d) for d in recorded)
    return dataset_shape(record["experiment"].data.dataset)


def dataset_shape(dataset: str) -> tuple:
    if dataset not in DATASET_SHAPES:
        raise ValueError(f"dataset {dataset!r} has no known image shape; pass input_shape (known: {', '.join(DATASET_SHAPES)})")
    return DATASET_SHAPES[dataset]


def _build(source: ModelSource, record: dict, input_shape: tuple) -> tuple[keras.Model, str]:
    """The run's architecture and how to name it in errors: `source`, else the recorded one, else the zoo's."""
    config = record["experiment"]
    if isinstance(source, keras.Model):
        return keras.models.clone_model(source), f"the model given ({source.name!r})"
    if source is not None:
        built = building.call_builder(source, config.runtime.seed)
        return built, f"the model built by model= ({getattr(built, 'name', '?')!r})"
    if _is_user_run(record):
        return _from_architecture(record), f"your own model {record['model'].get('name')!r} (from config.json)"
    built = building.zoo_model(config, input_shape)
    return built, f"zoo model {config.model.model!r}"


def _from_architecture(record: dict) -> keras.Model:
    architecture = record.get("architecture")
    if not isinstance(architecture, str) or not architecture:
        raise ValueError(f"the run was made with your own model and its config.json records no architecture; {_NEEDS_MODEL}")
    try:
        return keras.models.model_from_json(architecture)
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"the run's own model cannot be rebuilt from config.json ({first_line(e, 160)}); {_NEEDS_MODEL}") from e


def _check_kernels(wrapped: keras.Model, record: dict, described: str) -> None:
    """The rebuilt model's pruned kernels are the run's (config.json records them since 0.2)."""
    recorded = record.get("model", {}).get("kernels") if isinstance(record.get("model"), dict) else None
    if not isinstance(recorded, dict):
        return
    built = {name: list(shape) for name, shape in pruning.kernel_shapes(wrapped).items()}
    if built != {name: list(shape) for name, shape in recorded.items()}:
        raise ValueError(
            f"{described} does not fit the run: its pruned kernels are {built}, the run's are {recorded}; "
            "pass the run's own model (model=)"
        )


def test_images(config: ExperimentConfig, count: int = CHECK_EXAMPLES) -> np.ndarray:
    """The first `count` test images of the run's dataset, float32 in [0, 1], for output checks and warmup."""
    return _test_split(config, count)[0]


def _test_split(config: ExperimentConfig, count: int) -> tuple[np.ndarray, str]:
    from tf_lottery.data import datasets as data  # TFDS: only when the run's test split is read

    splits = data.load(config.data.dataset, data_dir=config.data.data_dir, validation_size=0)
    return splits.test_images[:count].astype(np.float32) / 255.0, data.source_line(splits.data_source)


def check_inputs(ticket: LoadedTicket) -> tuple[Optional[np.ndarray], str]:
    """(images, where they came from): the run's dataset's test images when the model takes them; None
    (random inputs) for a user's own data."""
    model_shape = tuple(int(d) for d in ticket.wrapped.input_shape[1:])
    if DATASET_SHAPES.get(ticket.config.data.dataset) != model_shape:
        return None, f"random inputs: the model takes {model_shape}, not {ticket.config.data.dataset}'s images"
    images, source = _test_split(ticket.config, CHECK_EXAMPLES)
    return images, f"test images of {ticket.config.data.dataset} from {source}"


def check_images(ticket: LoadedTicket) -> Optional[np.ndarray]:
    """The run's dataset's test images when the model takes them; None (random inputs) for a user's own data."""
    return check_inputs(ticket)[0]


test_images.__test__ = False  # not a pytest test, though its name says "test"
