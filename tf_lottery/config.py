"""Typed configuration of a ticket search: one dataclass per part, each checked when it is built.

Every setting has one name: the dataclass field is the `lottery-find` flag (`fc_rate` is
`--fc_rate`), the key in `config.json`, and the name in every error message. Field names are
unique across the sections so that the flat names work everywhere (`override(config, fc_rate=0.3)`).
Each field carries its help text; `tf_lottery/cli/flags.py` generates the flags from them.

This module imports neither TensorFlow nor Keras, so tools that only read runs stay light, and
nothing else of ours: the model zoo imports it (its presets are flat fields of these dataclasses).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from typing import Any, Mapping, Optional, Union

# The names each choice allows. Pruning strategies and branches live in their registries
# (tf_lottery.strategies, tf_lottery.branches); find_ticket and LotteryCallback check names against them.
SCOPES = ("layerwise", "global", "global_all")
# What one pruning decision removes: a weight (the paper), a whole output unit or filter, a 1x4 block
# of a Dense kernel along its input dimension (TFLite's sparse kernel), or 2 of every 4 weights (2:4).
GRANULARITIES = ("weight", "unit", "block", "m_by_n")
# Which training examples a data-dependent score (SNIP, GraSP) is computed on.
SCORE_BATCHES = ("balanced", "first")
# Registered strategies whose scores read no training data: score_batches changes none of their
# results, so it is left out of their fingerprints (tests check this against the registry).
DATA_FREE_STRATEGIES = ("magnitude", "magnitude_init", "random", "synflow")
SCHEDULES = ("iterative", "one_shot")
RETRAIN_MODES = ("weight_rewind", "lr_rewind", "finetune")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
# Keras optimizer names accepted as a string; any Keras optimizer config (a dict) is accepted too.
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "adagrad", "adadelta", "adamax", "nadam", "ftrl")
# Fields that change no result: where data lives, how the run is spread or checkpointed, how long
# it goes on (more rounds extend a run without changing the rounds it has).
# keep_one_weight only lets a search reach levels that would otherwise be refused, so no finished
# round depends on it.
NOT_RESULT_FIELDS = ("data_dir", "strategy", "tpu", "worker_timeout", "rounds", "checkpoint_every", "keep_one_weight")
# Fields added after 0.2 and the value that means what runs did before them. A run directory of an
# earlier layout version is read with these values (`upgrade`), and a field at this value is left
# out of the fingerprint, so earlier runs keep theirs.
ADDED_AT_DEFAULT = {"granularity": "weight", "score_batches": "first", "layer_rates": ()}
MAX_SEED = 2**32 - 1
# Upper bounds a real run stays within (a typo such as --iterations=5000000000 is refused, with the
# bound in the message). ImageNet ResNet-50 for 90 epochs is 450,000 iterations; the paper's longest
# search is 26 rounds (how many rounds the rates allow before a layer is empty is checked per model,
# see strategies.first_emptied); a learning rate above 1000 diverges with any Keras optimizer.
MAX_ROUNDS = 10_000
MAX_ITERATIONS = 100_000_000
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 1 << 20
MAX_EXAMPLES = 100_000_000
MAX_LEARNING_RATE = 1000.0
MAX_WORKER_TIMEOUT = 86_400.0
CONFIG_VERSION = 3


def setting(default: Any, help: str, **kwargs) -> Any:
    """A config field with its help text (the flag's help)."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple default")
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def _check_rate(name: str, value: Optional[float], allow_zero: bool = False, allowed: Optional[str] = None) -> None:
    """A fraction in (0, 1), or [0, 1) with `allow_zero`; None is not a rate (callers allow it where it means something)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and not math.isnan(value)
    low_ok = ok and (value >= 0.0 if allow_zero else value > 0.0)
    if not (low_ok and value < 1.0):
        allowed = allowed or ("[0, 1) (0 leaves the layer dense)" if allow_zero else "(0, 1)")
        raise ValueError(f"{name}={value!r} is outside the allowed range {allowed}")


def _layer_rates(value: Any) -> tuple[str, ...]:
    """NAME=RATE items (a list, or one comma-separated string), checked and in one spelling: sorted
    by name, each rate as a float, so that equal settings compare (and fingerprint) equal."""
    items = _as_tuple("layer_rates", value, str)
    rates: dict[str, float] = {}
    for item in items:
        name, sep, rate = item.partition("=") if isinstance(item, str) else ("", "", "")
        name = name.strip()
        try:
            number = float(rate)
        except ValueError:
            number = None
        if not sep or not name or number is None:
            raise ValueError(f"layer_rates item {item!r} must be NAME=RATE, e.g. fc1=0.3")
        if name in rates:
            raise ValueError(f"layer_rates names layer {name!r} twice")
        _check_rate(f"layer_rates {name}", number, allow_zero=True)
        rates[name] = number
    return tuple(f"{name}={rates[name]!r}" for name in sorted(rates))


def layer_rate_overrides(config: "PruningConfig") -> dict[str, float]:
    """`layer_rates` as {layer name: rate}."""
    return {name: float(rate) for name, _, rate in (item.partition("=") for item in config.layer_rates)}


def _check_choice(name: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")


def _check_int(name: str, value: Any, low: int = 1, high: Optional[int] = None) -> None:
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not is_int or value < low or (high is not None and value > high):
        allowed = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
        raise ValueError(f"{name}={value!r} must be {allowed}")


def _check_positive_number(name: str, value: Any, high: float = math.inf) -> None:
    """A finite number in (0, high]: NaN and infinity are refused."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (ok and 0 < value <= high and math.isfinite(value)):
        allowed = "a positive finite number" if high == math.inf else f"a number in (0, {high:g}]"
        raise ValueError(f"{name}={value!r} must be {allowed}")


def _as_tuple(name: str, value: Any, item_type: type) -> tuple:
    """Tuples stay, lists become tuples, and a comma-separated string is split (controls="a,b")."""
    original = value
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError(f"{name}={original!r} must be a list (or a comma-separated string)") from None
    if item_type is int:
        try:
            return tuple(int(v) if isinstance(v, str) else v for v in items)
        except ValueError:
            raise ValueError(f"{name}={original!r} must be a list of integers") from None
    return items


def _set(obj, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # normalizing a frozen dataclass in __post_init__


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which zoo architecture to build (ignored when you pass your own model) and its dropout."""

    model: str = setting("lenet_300_100", "Model zoo name: lenet_300_100, conv2, conv4, conv6, vgg19, resnet18.")
    dropout_rate: float = setting(0.0, "Dropout rate after the hidden FC layers of the zoo models (0: none).")

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model={self.model!r} must be a model zoo name")
        if self.dropout_rate:
            _check_rate("dropout_rate", self.dropout_rate)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which dataset, where its files are, and how many training examples are held out."""

    dataset: str = setting("fashion_mnist", "Dataset: mnist, fashion_mnist or cifar10.")
    data_dir: Optional[str] = setting(None, "TFDS data_dir, or a folder with the raw IDX / CIFAR-10 binary files.")
    validation_size: int = setting(5000, "Training examples held out for validation (early stopping; paper: 5,000).")
    train_subset: Optional[int] = setting(None, "Train on the first N training examples only (quick trials).")

    def __post_init__(self):
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"dataset={self.dataset!r} must be a dataset name")
        if self.data_dir is not None and (not isinstance(self.data_dir, str) or not self.data_dir):
            raise ValueError(f"data_dir={self.data_dir!r} must be a non-empty path (or None)")
        # Early stopping selects on the validation set; without one it would select on the test set.
        _check_int("validation_size", self.validation_size, low=1, high=MAX_EXAMPLES)
        if self.train_subset is not None:
            _check_int("train_subset", self.train_subset, high=MAX_EXAMPLES)


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """How each network of the search trains. `iterations` wins over `epochs` when both are set.

    `optimizer` is a Keras optimizer name (with `learning_rate` and `momentum`), or a Keras
    optimizer config (`keras.optimizers.serialize(opt)`), which carries its own learning rate;
    then `learning_rate` and `momentum` must be None. Every network trains with a fresh optimizer
    built from it, as in the paper.
    """

    optimizer: Union[str, dict] = setting("adam", "Optimizer: " + ", ".join(OPTIMIZERS) + ".")
    learning_rate: Optional[float] = setting(1.2e-3, "Learning rate (with an optimizer name).")
    momentum: Optional[float] = setting(0.9, "Momentum of sgd and rmsprop (with an optimizer name).")
    batch_size: int = setting(60, "Global batch size (split across replicas under a strategy).")
    epochs: Optional[int] = setting(None, "Epochs a network trains (used when iterations is unset).")
    iterations: Optional[int] = setting(50_000, "Iterations a network trains (wins over epochs).")
    lr_boundaries: tuple[int, ...] = setting((), "Iterations where the learning rate drops 10x.")
    warmup_iterations: int = setting(0, "Linear learning-rate warmup from 0 over this many iterations.")
    eval_every: int = setting(100, "Iterations between evaluations of validation loss and test accuracy.")
    checkpoint_every: int = setting(1000, "Iterations between mid-round checkpoints (0: only at round ends).")
    jit_compile: bool = setting(False, "Compile training steps with XLA (faster; float results differ slightly).")

    def __post_init__(self):
        _set(self, "lr_boundaries", _as_tuple("lr_boundaries", self.lr_boundaries, int))
        if isinstance(self.optimizer, dict):
            if not isinstance(self.optimizer.get("class_name"), str) or not isinstance(self.optimizer.get("config"), dict):
                raise ValueError(
                    "optimizer config must be {'class_name': ..., 'config': {...}} as keras.optimizers.serialize gives"
                )
            for name in ("learning_rate", "momentum"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name}={getattr(self, name)!r} cannot be combined with an optimizer config, which carries "
                        f"its own; set {name}=None"
                    )
        elif not isinstance(self.optimizer, str):
            raise ValueError(
                f"optimizer={type(self.optimizer).__name__} object: a config holds an optimizer name or "
                f"keras.optimizers.serialize(opt); pass the object itself as find_ticket(optimizer=...)"
            )
        else:
            _check_choice("optimizer", self.optimizer, OPTIMIZERS)
            if self.learning_rate is None:
                raise ValueError("learning_rate=None needs an optimizer config; give a positive number")
            _check_positive_number("learning_rate", self.learning_rate, high=MAX_LEARNING_RATE)
            if self.momentum is not None:
                _check_rate("momentum", self.momentum, allow_zero=True, allowed="[0, 1)")
        _check_int("batch_size", self.batch_size, high=MAX_BATCH_SIZE)
        if self.iterations is None and self.epochs is None:
            raise ValueError("give either epochs or iterations (both are unset)")
        if self.iterations is not None:
            _check_int("iterations", self.iterations, high=MAX_ITERATIONS)
        if self.epochs is not None:
            _check_int("epochs", self.epochs, high=MAX_EPOCHS)
        _check_int("eval_every", self.eval_every, high=MAX_ITERATIONS)
        _check_int("checkpoint_every", self.checkpoint_every, low=0, high=MAX_ITERATIONS)
        _check_int("warmup_iterations", self.warmup_iterations, low=0, high=MAX_ITERATIONS)
        for b in self.lr_boundaries:
            _check_int("lr_boundaries", b, high=MAX_ITERATIONS)
        if list(self.lr_boundaries) != sorted(set(self.lr_boundaries)):
            raise ValueError(f"lr_boundaries={self.lr_boundaries!r} must increase strictly")
        if not isinstance(self.jit_compile, bool):
            raise ValueError(f"jit_compile={self.jit_compile!r} must be True or False")

    def total_iterations(self, num_train_examples: int) -> int:
        """Iterations of one training run: `iterations`, or `epochs` full passes over the data."""
        if self.iterations:
            return int(self.iterations)
        return int(self.epochs) * math.ceil(num_train_examples / self.batch_size)


@dataclasses.dataclass(frozen=True)
class PruningConfig:
    """The IMP schedule: `rounds` networks from dense (round 0) down, at per-kind rates.

    `output_rate` None prunes the output layer at half the rate of its kind, as the paper does
    for Lenet and Conv-2/4/6; 0 leaves it dense (the paper's VGG-19 and Resnet-18).
    """

    rounds: int = setting(12, "Networks trained: round 0 is dense, round r keeps (1-p)^r of the weights.")
    fc_rate: float = setting(0.2, "Fraction of surviving fully connected weights pruned each round (paper: 0.2).")
    conv_rate: float = setting(0.1, "Fraction of surviving convolution weights pruned each round (paper: 0.1-0.2).")
    output_rate: Optional[float] = setting(None, "Rate of the output layer (default: half its kind's; 0: dense).")
    layer_rates: tuple[str, ...] = setting(
        (), "Per-layer rates overriding their kind's, NAME=RATE,... (e.g. fc1=0.3,fc2=0.1; 0 leaves a layer "
        "dense); layerwise scope only.")
    pruning_scope: str = setting(
        "layerwise", "layerwise (each layer by its own scores), global (one threshold over all layers but the "
        "output, which keeps its own rate) or global_all (one threshold over every layer, as the pruning-at-"
        "initialization papers rank).")
    pruning_strategy: str = setting("magnitude", "How weights are scored for pruning (see tf_lottery.strategies).")
    schedule: str = setting("iterative", "iterative (prune, rewind, retrain) or one_shot (prune the dense run's weights).")
    rewind_step: int = setting(0, "Rewind survivors to the weights at this iteration of the dense run (0: theta_0).")
    retrain: str = setting("weight_rewind", "After pruning: weight_rewind (the paper), lr_rewind or finetune.")
    controls: tuple[str, ...] = setting((), "Branches trained beside each pruned ticket: random_reinit, random_prune, ...")
    granularity: str = setting(
        "weight", "What one pruning step removes: weight, unit (whole units/filters), block (1x4 blocks of Dense "
        "kernels), m_by_n (2 of every 4 weights along the input dimension).")
    score_batches: str = setting(
        "balanced", "Examples a data-dependent score (snip, grasp, grasp_magnitude) reads: balanced (an equal "
        "number per class, drawn with the run's seed) or first (the first batches of seed 0's order, as runs "
        "before 0.3 did).")
    keep_one_weight: bool = setting(
        False, "Let rounds go on where the rates leave a layer no weight: keep its largest one (default: refuse).")

    def __post_init__(self):
        _set(self, "controls", _as_tuple("controls", self.controls, str))
        _check_int("rounds", self.rounds, high=MAX_ROUNDS)
        if not isinstance(self.keep_one_weight, bool):
            raise ValueError(f"keep_one_weight={self.keep_one_weight!r} must be True or False")
        _check_rate("fc_rate", self.fc_rate)
        _check_rate("conv_rate", self.conv_rate)
        if self.output_rate is not None:  # None: half the rate of the output layer's kind
            _check_rate("output_rate", self.output_rate, allow_zero=True)
        _check_choice("pruning_scope", self.pruning_scope, SCOPES)
        _set(self, "layer_rates", _layer_rates(self.layer_rates))
        if self.layer_rates and self.pruning_scope != "layerwise":
            raise ValueError(
                f"layer_rates={','.join(self.layer_rates)} with pruning_scope={self.pruning_scope!r}: a global "
                "threshold ranks the layers together, so no layer has a rate of its own; allowed: "
                "pruning_scope='layerwise'")
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("retrain", self.retrain, RETRAIN_MODES)
        _check_int("rewind_step", self.rewind_step, low=0, high=MAX_ITERATIONS)
        if len(set(self.controls)) != len(self.controls):
            raise ValueError(f"controls={','.join(self.controls)} names a control twice")
        _check_choice("granularity", self.granularity, GRANULARITIES)
        _check_choice("score_batches", self.score_batches, SCORE_BATCHES)
        if self.granularity != "weight" and self.pruning_scope != "layerwise":
            raise ValueError(
                f"pruning_scope={self.pruning_scope!r} with granularity={self.granularity!r}: units, blocks and 2:4 "
                "groups are ranked within each layer (their norms do not compare across layers); allowed: "
                "pruning_scope='layerwise'")
        if "inverted" in self.controls and self.granularity != "weight":
            raise ValueError(
                f"controls=inverted with granularity={self.granularity!r}: inverting a unit, block or 2:4 ranking "
                "is not defined here; allowed: granularity='weight'")
        if self.granularity == "unit" and self.output_rate not in (None, 0.0):
            raise ValueError(
                f"output_rate={self.output_rate!r} with granularity='unit': the output layer keeps all its units "
                "(one per class); allowed: output_rate unset or 0")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where and how reproducibly it runs."""

    strategy: str = setting("default", "tf.distribute strategy: " + ", ".join(STRATEGIES) + ".")
    tpu: Optional[str] = setting(None, "TPU name or grpc:// address for strategy tpu ('local' on a TPU VM).")
    seed: int = setting(0, "Random seed for initialization, data order and controls.")
    deterministic: bool = setting(False, "Turn on TensorFlow op determinism (bit-identical reruns and resumes).")
    worker_timeout: float = setting(300.0, "Seconds to wait for every worker (multi_worker) or the TPU to answer.")

    def __post_init__(self):
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_int("seed", self.seed, low=0, high=MAX_SEED)
        if not isinstance(self.deterministic, bool):
            raise ValueError(f"deterministic={self.deterministic!r} must be True or False")
        _check_positive_number("worker_timeout", self.worker_timeout, high=MAX_WORKER_TIMEOUT)


SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "training": TrainingConfig,
    "pruning": PruningConfig,
    "runtime": RuntimeConfig,
}


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """A whole ticket search. The same config always means the same results (given `deterministic`)."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    pruning: PruningConfig = dataclasses.field(default_factory=PruningConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)

    def __post_init__(self):
        for name, kind in SECTIONS.items():
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"{name}={getattr(self, name)!r} must be a {kind.__name__}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExperimentConfig":
        """The config of a `to_dict()` dictionary; unknown sections or fields are a ValueError."""
        if not isinstance(d, dict):
            raise ValueError(f"a config must be a dictionary of sections, not {type(d).__name__}")
        unknown = set(d) - set(SECTIONS)
        if unknown:
            raise ValueError(f"unknown config sections {sorted(unknown)}; allowed: {', '.join(SECTIONS)}")
        sections = {}
        for name, kind in SECTIONS.items():
            values = d.get(name, {})
            if not isinstance(values, dict):
                raise ValueError(f"config section {name!r} must be a dictionary, not {type(values).__name__}")
            fields = {f.name for f in dataclasses.fields(kind)}
            extra = set(values) - fields
            if extra:
                raise ValueError(f"unknown config fields {sorted(extra)} in section {name!r}")
            sections[name] = kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
        return cls(**sections)

    def flat(self) -> dict[str, Any]:
        """Every field by its (unique) name."""
        return {f.name: getattr(getattr(self, s), f.name) for s, kind in SECTIONS.items() for f in dataclasses.fields(kind)}

    def result_fields(self) -> dict[str, Any]:
        """The fields that decide a run's results (not where, on what hardware, or for how many rounds).

        A field added after 0.2 is left out at its value before it existed (`ADDED_AT_DEFAULT`), so
        the fingerprints of earlier runs stay what they were; `score_batches` is left out where the
        strategy reads no data, so magnitude runs before and after it share a fingerprint.
        """
        flat = self.flat()
        return {k: v for k, v in flat.items()
                if k not in NOT_RESULT_FIELDS and k not in _inert_fields(flat)
                and not (k in ADDED_AT_DEFAULT and _canonical(v) == _canonical(ADDED_AT_DEFAULT[k]))}

    def fingerprint(self) -> str:
        """A short hash of the result-deciding fields: a run directory belongs to one fingerprint."""
        blob = json.dumps(self.result_fields(), sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def section_of(field_name: str) -> str:
    """The section ('training', ...) holding a field; ValueError naming the known fields if none."""
    for section, kind in SECTIONS.items():
        if field_name in {f.name for f in dataclasses.fields(kind)}:
            return section
    known = sorted(f.name for kind in SECTIONS.values() for f in dataclasses.fields(kind))
    raise ValueError(f"unknown config field {field_name!r}; known: {', '.join(known)}")


def override(config: ExperimentConfig, **values: Any) -> ExperimentConfig:
    """`config` with fields replaced by their flat names: override(config, fc_rate=0.3, seed=1)."""
    by_section: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        by_section.setdefault(section_of(name), {})[name] = value
    changes = {s: dataclasses.replace(getattr(config, s), **v) for s, v in by_section.items()}
    return dataclasses.replace(config, **changes)


def differing_fields(a: ExperimentConfig, b: ExperimentConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """Names of the result-deciding fields where two configs differ (except `ignore`)."""
    fa, fb = a.flat(), b.flat()
    # A field that decides nothing on either side (score_batches of a data-free strategy) is not compared.
    skip = set(NOT_RESULT_FIELDS) | _inert_fields(fa) | _inert_fields(fb) | set(ignore)
    return [k for k in fa if k not in skip and _canonical(fa[k]) != _canonical(fb[k])]  # in the config's order


def _inert_fields(flat: dict[str, Any]) -> set[str]:
    """Result fields that decide nothing for this config: score_batches where the strategy reads no data."""
    return {"score_batches"} if flat["pruning_strategy"] in DATA_FREE_STRATEGIES else set()


def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=list))


# -- run directories written before version 2 -------------------------------------------------
_RENAMED_IN_V2 = {("model", "name"): "model", ("pruning", "scope"): "pruning_scope"}


def upgrade(saved: dict[str, Any], version: int) -> dict[str, Any]:
    """A config dictionary of an older `config.json` in today's names and meaning."""
    if version >= CONFIG_VERSION:
        return saved
    d = {section: dict(values) if isinstance(values, dict) else values for section, values in saved.items()}
    for (section, old), new in _RENAMED_IN_V2.items():
        if isinstance(d.get(section), dict) and old in d[section]:
            d[section][new] = d[section].pop(old)
    if version < 2:  # version 1 trained without XLA and rewound weights only
        d.setdefault("training", {}).setdefault("jit_compile", False)
    # Fields added since: an earlier run did what their ADDED_AT_DEFAULT value does.
    for name, value in ADDED_AT_DEFAULT.items():
        d.setdefault(section_of(name), {}).setdefault(name, value)
    return d


# -- presets: configs of the same type ---------------------------------------------------------
PRESETS = ("paper", "fast")
FAST_EPOCHS = 4


def preset_config(
    model: str, paper_fields: Mapping[str, Any], preset: str = "paper", dataset: str = "fashion_mnist"
) -> ExperimentConfig:
    """`model`'s config from its paper hyperparameters ('paper'), or the same with 4 epochs a round ('fast').

    `paper_fields` are the flat field overrides the zoo registers for `model`; the zoo's
    `from_preset` (`tf_lottery.from_preset`) passes them here, so that this module imports
    nothing of ours (nor TensorFlow) while the zoo checks its presets against it.
    """
    _check_choice("preset", preset, PRESETS)
    values = dict(paper_fields)
    if preset == "fast":
        values.update(iterations=None, epochs=FAST_EPOCHS, lr_boundaries=(), warmup_iterations=0)
    return override(ExperimentConfig(), model=model, dataset=dataset, **values)
