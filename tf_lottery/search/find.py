"""`find_ticket`: set a search up (model, inputs, objective, run directory, strategy) and run it.

The level loop itself is `tf_lottery.search.levels.Search`; this module turns what a user passes (a zoo
name, a tf-keras or Keras 3 model or builder, arrays, `Splits` or tf.data, an optimizer object
or a compiled model) into one validated setup, and refuses what cannot be made right in one
line, before anything is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import tempfile
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_lottery import branches, keras3, strategies
from tf_lottery import config as config_lib
from tf_lottery.config import ExperimentConfig
from tf_lottery.data import inputs as inputs_lib
from tf_lottery.data import raw_files
from tf_lottery.masking import pruning
from tf_lottery.search import building, distribute, training
from tf_lottery.search.levels import Search
from tf_lottery.search.run_directory import RunDirectory
from tf_lottery.search.ticket import Ticket

ModelSource = Union[keras.Model, Callable[..., keras.Model], None]
CHECK_IMAGES = 512
DATA_LINE_PREFIX = "data: "  # the log line saying where the run's data came from (the CLI folds it into its header)


def _build_model(source: ModelSource, config: ExperimentConfig, input_shape, num_classes: int) -> tuple[keras.Model, str]:
    """The model to search and where it came from ('zoo' or 'user')."""
    if source is not None and (isinstance(source, keras.Model) or hasattr(source, "layers")):
        return source, "user"
    if source is not None:
        return building.call_builder(source, config.runtime.seed), "user"
    return building.zoo_model(config, input_shape, num_classes), "zoo"


def _check_input_shape(model: keras.Model, spec, source: str) -> None:
    if isinstance(model.input_shape, list) or isinstance(spec, dict) or spec is None:
        return
    expected = tuple(model.input_shape[1:])
    got = tuple(spec)
    if len(expected) != len(got) or any(e is not None and e != g for e, g in zip(expected, got)):
        raise ValueError(f"dataset {source!r} has inputs of shape {got} but model {model.name!r} takes {expected}")


def _with_users_optimizer(config: ExperimentConfig, optimizer) -> ExperimentConfig:
    """Record an optimizer object (or config, or name) in the config: each network gets a fresh copy of it."""
    if optimizer is None:
        return config
    if isinstance(optimizer, str):
        return config_lib.override(config, optimizer=optimizer.lower())
    if isinstance(optimizer, dict):
        serialized = optimizer
    else:
        inner = getattr(optimizer, "inner_optimizer", None)  # a LossScaleOptimizer: compile adds it back
        serialized = keras.optimizers.serialize(inner if inner is not None else optimizer)
    serialized = _jsonable(serialized)
    return config_lib.override(config, optimizer=serialized, learning_rate=None, momentum=None)


def _jsonable(value):
    import json

    try:
        return json.loads(json.dumps(value))
    except TypeError as e:
        raise ValueError(f"the optimizer's config cannot be recorded as JSON ({e}); pass a standard Keras optimizer") from e


def _objective(model: keras.Model, compiled: Optional[keras.Model], loss, metrics, one_hot: bool) -> training.Objective:
    """The user's loss and metrics (given, or the compiled model's), else cross-entropy on the model's output."""
    if loss is None and compiled is not None and getattr(compiled, "compiled_loss", None) is not None:
        loss = compiled.loss
    if metrics is None and compiled is not None and getattr(compiled, "compiled_metrics", None) is not None:
        metrics = list(compiled.compiled_metrics._user_metrics or [])  # noqa: SLF001
    if loss is None:
        objective = training.default_objective(model, one_hot)
        return dataclasses.replace(objective, metrics=list(metrics or []))
    return training.Objective(loss, list(metrics or []))


def _make_inputs(config: ExperimentConfig, splits, train, validation, test, strategy, example_rank) -> inputs_lib.Inputs:
    batch = config.training.batch_size
    if isinstance(train, tf.data.Dataset):
        return inputs_lib.from_datasets(train, validation, test, batch, example_rank)
    if train is not None:
        return inputs_lib.from_arrays(train, validation, test, batch, scale=False, name="arrays")
    return inputs_lib.from_config(config, splits)


def _example_rank(model) -> Optional[int]:
    """The rank of one example the model takes (None: several inputs, or not known yet)."""
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):  # a subclassed model never called
        return None
    return None if isinstance(shape, list) else len(shape) - 1


def _check_names(config: ExperimentConfig) -> None:
    strategies.get(config.pruning.pruning_strategy)
    strategies.check_granularity(config.pruning)
    for name in config.pruning.controls:
        if name == branches.MAIN:
            raise ValueError(f"unknown control {name!r}; allowed: {', '.join(branches.controls())}")
        branches.get(name)


def _record(config: ExperimentConfig, inputs, model: keras.Model, wrapped: keras.Model, source: str) -> dict:
    return {
        "version": config_lib.CONFIG_VERSION,
        "config": config.to_dict(),
        "fingerprint": config.fingerprint(),
        "data_fingerprint": inputs.fingerprint,
        "data_source": inputs.data_source,
        "model": {
            "source": source,
            "name": model.name,
            "input_shape": None if isinstance(model.input_shape, list) else list(model.input_shape[1:]),
            "kernels": {k: list(v) for k, v in pruning.kernel_shapes(wrapped).items()},
        },
        "architecture": model.to_json(),
    }


def _irrelevant_fields(config: ExperimentConfig, kinds: dict, source: str) -> tuple[str, ...]:
    """Fields that cannot change this search's result (e.g. conv_rate of a network without convolutions)."""
    out = []
    if "conv" not in kinds.values():
        out.append("conv_rate")
    if not (isinstance(config.training.optimizer, str) and config.training.optimizer in ("sgd", "rmsprop")):
        out.append("momentum")
    if source == "user":
        out += ["model", "dropout_rate"]
    return tuple(out)


def _open_existing(run: RunDirectory, config: ExperimentConfig, record: dict, kinds: dict, source: str) -> dict:
    """Check an existing run against this search; return its record (resumed as it was written)."""
    saved = run.read_record()
    where = f"output_dir {run.path}"
    diff = config_lib.differing_fields(saved["experiment"], config, _irrelevant_fields(config, kinds, source))
    if diff:
        raise ValueError(f"{where} holds a run with different hyperparameters ({', '.join(diff)}); "
                         "use another output_dir, or the same settings to resume")
    if saved.get("model", {}).get("kernels") not in (None, record["model"]["kernels"]):
        raise ValueError(f"{where} holds a run of another model (its prunable layers or their shapes differ)")
    if saved.get("data_fingerprint") not in (None, record["data_fingerprint"]):
        raise ValueError(
            f"{where} was trained on other data (data fingerprint {saved['data_fingerprint']}, now "
            f"{record['data_fingerprint']}): the images or labels loaded differ; use the same data or another output_dir"
        )
    saved.pop("experiment")
    return saved


@contextlib.contextmanager
def _run_directory(output_dir: Optional[str], strategy) -> Any:
    """(RunDirectory, keeper): the user's run (the chief's, or a worker's private copy), or a temporary one."""
    if output_dir is None:
        keep = tempfile.TemporaryDirectory(prefix="tf_lottery_run_")
        yield RunDirectory(os.path.join(keep.name, "run")), keep
        return
    with distribute.run_directory(output_dir, strategy) as run:
        yield run, None


def find_ticket(
    model: ModelSource = None,
    config: Optional[ExperimentConfig] = None,
    *,
    splits=None,
    train=None,
    validation=None,
    test=None,
    output_dir: Optional[str] = None,
    strategy: Optional[tf.distribute.Strategy] = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    optimizer=None,
    loss=None,
    metrics=None,
    log: Callable[[str], None] = print,
    progress=None,
) -> Ticket:
    """Find a winning ticket by iterative magnitude pruning.

    Args:
      model: a tf-keras or Keras 3 Sequential/functional model, a function building one (given
        `seed=` if it takes it), or None for `config.model.model` from the zoo. A compiled model
        lends its optimizer, loss and metrics unless those are given.
      config: the experiment (defaults: Lenet-300-100's paper settings).
      splits: a `tf_lottery.data.Splits`; or `train`/`validation`/`test` as `(x, y)` NumPy pairs
        or tf.data datasets (batched or not); else the data named by `config.data`. A validation
        set is required: early stopping selects on it, never on the test set.
      output_dir: the run directory; rerunning with the same settings resumes it. Without it the
        run lives in a temporary directory kept as long as the returned Ticket.
      strategy: a tf.distribute strategy; the whole search runs in its scope and the batch size
        is global. In a multi-worker cluster only the chief writes `output_dir`.
      callbacks: Keras callbacks added to every network's training.
      optimizer, loss, metrics: any Keras optimizer (object, config or name), loss and metrics;
        each network trains with a fresh copy of the optimizer, as in the paper.
      log, progress: where round lines go; a `tf_lottery.search.progress.Progress` bar.

    Returns:
      A `Ticket`: every round's masks and metrics; `trained_model()`, `rewound_model()`, `export()`.

    Raises:
      ValueError: bad input, in one line (also `CorruptRunError`, `RunLockedError` for runs).
      training.TrainingDiverged: the loss became NaN; earlier rounds are kept.
      distribute.WorkerLostError: a worker of a multi-worker run died or hung.
    """
    # Keras models, their optimizers and traced functions form reference cycles that only a full
    # collection frees; the collector's own thresholds run one every few calls, so memory would
    # climb by ~6 MB a call between them in a loop of searches (issue 19). Free the last ones first.
    gc.collect()
    with contextlib.ExitStack() as stack:
        deterministic = isinstance(config, ExperimentConfig) and config.runtime.deterministic
        stack.enter_context(training.op_determinism(deterministic))  # for the search only, not after it
        setup = _Setup.of(model, config, splits, train, validation, test, output_dir, strategy, optimizer)
        run, keep = stack.enter_context(_run_directory(output_dir, setup.strategy))
        search, record = _open_search(stack, setup, run, callbacks, loss, metrics, log, progress)
        log(DATA_LINE_PREFIX + raw_files.source_line(setup.inputs.data_source))
        stack.enter_context(distribute.peer_failures(setup.strategy, output_dir))
        rows = search.search(record)
        return Ticket(
            config=setup.config,
            rounds=rows,
            round_masks=[search.masks(r["round"]) for r in rows],
            rewind_weights=search.rewind_weights(),
            output_dir=os.path.abspath(output_dir) if output_dir else run.path,
            _search=search,
            _keep=keep,
            _check_images=_check_images(setup.inputs),
            _keras3_template=setup.keras3_template,
        )


@dataclasses.dataclass
class _Setup:
    """What a search is made of, checked before anything is built or written."""

    config: ExperimentConfig
    inputs: inputs_lib.Inputs
    strategy: tf.distribute.Strategy
    model: ModelSource
    compiled: Optional[keras.Model]
    keras3_template: Any
    data_name: str

    @classmethod
    def of(cls, model, config, splits, train, validation, test, output_dir, strategy, optimizer) -> "_Setup":
        config = config if config is not None else ExperimentConfig()
        if not isinstance(config, ExperimentConfig):
            raise ValueError(f"config must be a tf_lottery.ExperimentConfig, not {type(config).__name__}")
        _check_names(config)
        if output_dir is not None:
            RunDirectory.check_path(output_dir)
        strategy = strategy or tf.distribute.get_strategy()
        template = None
        if keras3.is_keras3_model(model):
            template, model = model, keras3.to_tf_keras(model)
        compiled = model if isinstance(model, keras.Model) and getattr(model, "optimizer", None) is not None else None
        config = _with_users_optimizer(config, optimizer if optimizer is not None else getattr(compiled, "optimizer", None))
        example_rank = 3 if model is None else _example_rank(model)  # zoo models take images (H, W, C)
        inputs = _make_inputs(config, splits, train, validation, test, strategy, example_rank)
        total = inputs.total_iterations(config.training)
        if config.pruning.rewind_step >= total and config.pruning.rewind_step > 0:
            raise ValueError(f"rewind_step={config.pruning.rewind_step} is past the end of training ({total} "
                             f"iterations); allowed: 0 <= rewind_step < {total}")
        batch_size = None if isinstance(train, tf.data.Dataset) else config.training.batch_size
        inputs = distribute.for_strategy(inputs, strategy, batch_size)
        return cls(config, inputs, strategy, model, compiled, template, config.data.dataset if train is None else "train")


def _open_search(stack, setup: _Setup, run: RunDirectory, callbacks, loss, metrics, log, progress):
    """Build and wrap the model, then create the run, or lock, check and verify an existing one."""
    config, strategy = setup.config, setup.strategy
    keras.utils.set_random_seed(config.runtime.seed)
    with strategy.scope():
        built, source = _build_model(setup.model, config, setup.inputs.input_spec, setup.inputs.num_classes or 10)
        pruning.check_keras_model(built)
        _check_input_shape(built, setup.inputs.input_spec, setup.data_name)
        wrapped = pruning.wrap(built)
    objective = _objective(wrapped, setup.compiled, loss, metrics, setup.inputs.one_hot)
    record = _record(config, setup.inputs, built, wrapped, source)
    search = Search(wrapped, config, setup.inputs, run, strategy, objective, tuple(callbacks), log, progress)
    search.check_levels()
    if run.exists():
        run.lock()
        stack.callback(run.unlock)
        record = _open_existing(run, config, record, pruning.layer_kinds(wrapped), source)
        search.verify()  # reads everything back before anything is written
        run.remove_temporaries()
    else:
        run.check_new()  # only once the model and data are known to fit: bad input writes nothing
        run.create(record)
        stack.callback(run.unlock)
    return search, record


def _check_images(inputs) -> Optional[np.ndarray]:
    """Up to 512 test inputs, for checking exports against the trained model."""
    xs, count = [], 0
    for x, _ in inputs.test:
        if isinstance(x, dict):
            return None
        xs.append(np.asarray(x))
        count += len(xs[-1])
        if count >= CHECK_IMAGES:
            break
    return np.concatenate(xs)[:CHECK_IMAGES].astype(np.float32) if xs else None
