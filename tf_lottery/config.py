"""Typed configuration of a ticket search, its validation, and a fingerprint for resuming.

Every experiment is described by these dataclasses; the CLI fills them from flags and the
Python API takes them directly. `validate` turns every user mistake into one ValueError
line naming the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Optional

CONTROLS = ("random_reinit", "random_prune")
SCOPES = ("layerwise", "global")
SCHEDULES = ("iterative", "one_shot")
OPTIMIZERS = ("adam", "sgd")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")


@dataclasses.dataclass
class ModelConfig:
    """Which architecture to build (a name in the model zoo) and its dropout rate."""

    name: str = "lenet_300_100"
    dropout_rate: float = 0.0


@dataclasses.dataclass
class DataConfig:
    """Which dataset, where its files are, and how many training examples are held out."""

    dataset: str = "fashion_mnist"
    data_dir: Optional[str] = None
    validation_size: int = 5000
    train_subset: Optional[int] = None  # train on the first N training examples only (quick trials)


@dataclasses.dataclass
class TrainingConfig:
    """How each network of the search trains. `iterations` wins over `epochs` when both are set."""

    optimizer: str = "adam"
    learning_rate: float = 1.2e-3
    momentum: float = 0.9
    batch_size: int = 60
    epochs: Optional[int] = None
    iterations: Optional[int] = 50_000
    lr_boundaries: tuple[int, ...] = ()
    warmup_iterations: int = 0
    eval_every: int = 100
    checkpoint_every: int = 1000

    def total_iterations(self, num_train_examples: int) -> int:
        """Iterations of one training run: `iterations`, or `epochs` full passes over the data."""
        if self.iterations:
            return int(self.iterations)
        return int(self.epochs) * math.ceil(num_train_examples / self.batch_size)


@dataclasses.dataclass
class PruningConfig:
    """The IMP schedule: `rounds` networks from dense (round 0) down, at per-kind rates.

    `output_rate` None prunes the output layer at half the rate of its kind, as the paper does
    for Lenet and Conv-2/4/6; 0 leaves it dense (the paper's VGG-19 and Resnet-18).
    """

    rounds: int = 12
    fc_rate: float = 0.2
    conv_rate: float = 0.1
    output_rate: Optional[float] = None
    scope: str = "layerwise"
    schedule: str = "iterative"
    rewind_step: int = 0
    controls: tuple[str, ...] = ()


@dataclasses.dataclass
class RuntimeConfig:
    """Where and how reproducibly it runs."""

    strategy: str = "default"
    tpu: Optional[str] = None
    seed: int = 0
    deterministic: bool = False
    worker_timeout: float = 300.0


@dataclasses.dataclass
class ExperimentConfig:
    """A whole ticket search. The same config always means the same results (given `deterministic`)."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    pruning: PruningConfig = dataclasses.field(default_factory=PruningConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExperimentConfig":
        def build(kind, values):
            names = {f.name for f in dataclasses.fields(kind)}
            unknown = set(values) - names
            if unknown:
                raise ValueError(f"unknown config fields {sorted(unknown)} for {kind.__name__}")
            values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
            return kind(**values)

        return cls(
            model=build(ModelConfig, d.get("model", {})),
            data=build(DataConfig, d.get("data", {})),
            training=build(TrainingConfig, d.get("training", {})),
            pruning=build(PruningConfig, d.get("pruning", {})),
            runtime=build(RuntimeConfig, d.get("runtime", {})),
        )

    def result_fields(self) -> dict[str, Any]:
        """The fields that decide a run's results (not where or on what hardware it runs)."""
        d = self.to_dict()
        d["data"].pop("data_dir")
        for key in ("strategy", "tpu", "worker_timeout"):
            d["runtime"].pop(key)
        # More rounds extend a run without changing the rounds it has; checkpoints change no result.
        d["pruning"].pop("rounds")
        d["training"].pop("checkpoint_every")
        return d

    def fingerprint(self) -> str:
        """A short hash of the result-deciding fields: a run directory belongs to one fingerprint."""
        blob = json.dumps(self.result_fields(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def differing_fields(a: ExperimentConfig, b: ExperimentConfig) -> list[str]:
    """Dotted names of the result-deciding fields where two configs differ."""
    da, db = a.result_fields(), b.result_fields()
    out = []
    for section in da:
        for key in da[section]:
            if da[section][key] != db.get(section, {}).get(key):
                out.append(f"{section}.{key}")
    return out


def _check_rate(name: str, value: Optional[float], allow_zero: bool = False) -> None:
    if value is None:
        return
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if not isinstance(value, (int, float)) or math.isnan(value) or not (low_ok and value < 1.0):
        allowed = "[0, 1) (0 leaves the layer dense)" if allow_zero else "(0, 1)"
        raise ValueError(f"{name}={value!r} is outside the allowed range {allowed}")


def _check_choice(name: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")


def _check_positive(name: str, value, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if value is None or int(value) != value or value < low:
        raise ValueError(f"{name}={value!r} must be an integer >= {low}")


def validate(config: ExperimentConfig) -> ExperimentConfig:
    """Raise a one-line ValueError for the first invalid field; return the config otherwise."""
    p, t, r = config.pruning, config.training, config.runtime
    _check_positive("rounds", p.rounds)
    _check_rate("pruning_rate", p.fc_rate)
    _check_rate("conv_pruning_rate", p.conv_rate)
    _check_rate("output_pruning_rate", p.output_rate, allow_zero=True)
    _check_choice("pruning_scope", p.scope, SCOPES)
    _check_choice("schedule", p.schedule, SCHEDULES)
    _check_positive("rewind_step", p.rewind_step, allow_zero=True)
    for control in p.controls:
        _check_choice("control", control, CONTROLS)
    _check_choice("optimizer", t.optimizer, OPTIMIZERS)
    if not t.learning_rate > 0 or math.isinf(t.learning_rate):
        raise ValueError(f"learning_rate={t.learning_rate!r} must be a positive number")
    _check_positive("batch_size", t.batch_size)
    if t.iterations is None and t.epochs is None:
        raise ValueError("give either epochs or iterations (both are unset)")
    if t.iterations is not None:
        _check_positive("iterations", t.iterations)
    if t.epochs is not None:
        _check_positive("epochs", t.epochs)
    _check_positive("eval_every", t.eval_every)
    _check_positive("checkpoint_every", t.checkpoint_every, allow_zero=True)
    _check_positive("warmup_iterations", t.warmup_iterations, allow_zero=True)
    _check_rate("dropout_rate", config.model.dropout_rate or None)
    _check_positive("validation_size", config.data.validation_size, allow_zero=True)
    if config.data.train_subset is not None:
        _check_positive("train_subset", config.data.train_subset)
    _check_choice("strategy", r.strategy, STRATEGIES)
    _check_positive("seed", r.seed, allow_zero=True)
    if not (isinstance(r.worker_timeout, (int, float)) and 0 < r.worker_timeout < math.inf):
        raise ValueError(f"worker_timeout={r.worker_timeout!r} must be a positive number of seconds")
    return config


def check_rewind_step(config: ExperimentConfig, total_iterations: int) -> None:
    """A rewind point must lie inside the dense training run."""
    step = config.pruning.rewind_step
    if step >= total_iterations and step > 0:
        raise ValueError(
            f"rewind_step={step} is past the end of training ({total_iterations} iterations); "
            f"allowed: 0 <= rewind_step < {total_iterations}"
        )


PRESETS = ("paper", "fast")


def from_preset(model_name: str, preset: str = "paper", dataset: str = "fashion_mnist") -> ExperimentConfig:
    """The paper's hyperparameters for a zoo model ('paper'), or the same with 4 epochs a round ('fast')."""
    import tf_lottery_models as zoo

    _check_choice("preset", preset, PRESETS)
    p = zoo.get_preset(model_name)
    iterations = p.iterations if preset == "paper" else None
    return ExperimentConfig(
        model=ModelConfig(name=model_name, dropout_rate=p.dropout_rate),
        data=DataConfig(dataset=dataset),
        training=TrainingConfig(
            optimizer=p.optimizer,
            learning_rate=p.learning_rate,
            momentum=p.momentum or 0.9,
            batch_size=p.batch_size,
            iterations=iterations,
            epochs=None if iterations else 4,
            lr_boundaries=tuple(p.lr_boundaries) if preset == "paper" else (),
            warmup_iterations=p.warmup_iterations if preset == "paper" else 0,
        ),
        pruning=PruningConfig(
            fc_rate=p.fc_pruning_rate,
            conv_rate=p.conv_pruning_rate,
            output_rate=p.output_pruning_rate,
            scope=p.pruning_scope,
        ),
    )
