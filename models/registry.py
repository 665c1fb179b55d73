"""Model builders registered by name, each with the paper's training and pruning preset."""

import dataclasses
from collections.abc import Callable

import tf_keras as keras

# build(input_shape, num_classes=10, dropout_rate=0.0, seed=None) -> keras.Model
Builder = Callable[..., keras.Model]

OPTIMIZERS = ("adam", "sgd")
PRUNING_SCOPES = ("layerwise", "global")


@dataclasses.dataclass(frozen=True)
class Preset:
    """How the paper trains and prunes a model (Figure 2 and Appendices)."""

    optimizer: str
    learning_rate: float
    batch_size: int
    iterations: int
    momentum: float = 0.0
    # Iterations where the SGD learning rate drops by 10x.
    lr_boundaries: tuple[int, ...] = ()
    # Linear warmup from 0 to learning_rate over this many iterations.
    warmup_iterations: int = 0
    fc_pruning_rate: float = 0.2
    conv_pruning_rate: float = 0.2
    # None: half the rate of the output layer's kind (the paper's rule).
    output_pruning_rate: float | None = None
    pruning_scope: str = "layerwise"
    dropout_rate: float = 0.0

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
        if self.pruning_scope not in PRUNING_SCOPES:
            raise ValueError(
                f"unknown pruning_scope {self.pruning_scope!r}; known: {', '.join(PRUNING_SCOPES)}"
            )
        rates = {
            "fc_pruning_rate": self.fc_pruning_rate,
            "conv_pruning_rate": self.conv_pruning_rate,
            "output_pruning_rate": self.output_pruning_rate,
            "dropout_rate": self.dropout_rate,
        }
        for field, rate in rates.items():
            if rate is not None and not 0.0 <= rate < 1.0:
                raise ValueError(f"{field} must be in [0, 1), got {rate}")
        if list(self.lr_boundaries) != sorted(set(self.lr_boundaries)) or any(
            not 0 < b < self.iterations for b in self.lr_boundaries
        ):
            raise ValueError(
                f"lr_boundaries must increase strictly within (0, {self.iterations}), "
                f"got {self.lr_boundaries}"
            )


@dataclasses.dataclass(frozen=True)
class _Entry:
    builder: Builder
    preset: Preset


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, preset: Preset) -> Callable[[Builder], Builder]:
    """Decorator: register a builder under `name` with its paper preset."""

    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = _Entry(builder, preset)
        return builder

    return decorate


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(names())}")
    return _REGISTRY[name]


def get_builder(name: str) -> Builder:
    """The builder registered under `name`; ValueError listing known names if none."""
    return _entry(name).builder


def get_preset(name: str) -> Preset:
    """The paper's preset for `name`; ValueError listing known names if none."""
    return _entry(name).preset


def names() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def layer_seed(seed: int | None, index: int) -> int | None:
    """The seed of a model's `index`-th random layer, derived from the model seed."""
    return None if seed is None else seed * 1000 + index


def glorot_normal(seed: int | None, index: int) -> keras.initializers.Initializer:
    """Gaussian Glorot (the paper's init) for the `index`-th layer; seed None is unseeded."""
    return keras.initializers.GlorotNormal(seed=layer_seed(seed, index))
