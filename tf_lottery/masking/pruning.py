"""Wrap a Keras model in TF-MOT pruning wrappers, keep its pruned weights at 0, read and write its masks.

TF-MOT's own schedule is frozen (`FixedMask` never fires) and its per-step `weight * mask`
assignment is dropped, so masks change only when tf_lottery writes them. Pruned weights stay
exactly 0 because each masked weight carries a variable constraint that zeroes its pruned
entries; Keras optimizers apply variable constraints after every update (new and legacy
optimizers, LossScaleOptimizer, under every tf.distribute strategy). That holds whatever the
optimizer and its state: a reused Adam, momentum, weight decay, learning-rate schedules.

Mask keys are the names of the wrapped layers (`fc1`), prefixed by the nested model's name for
layers inside a nested model (`encoder/fc1`), and suffixed by the weight's name when a layer has
several prunable weights (`lstm/recurrent_kernel`).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Mapping

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_lottery.masking.keras_kind import is_keras3_model
from tf_lottery.masking.tfmot import tfmot
from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry  # noqa: E402  (after tfmot)

_BOOKKEEPING = ("mask", "threshold", "pruning_step")
_PrunableLayer = tfmot.sparsity.keras.PrunableLayer


class FixedMask(tfmot.sparsity.keras.PruningSchedule):
    """A TF-MOT schedule that never prunes: the mask stays whatever tf_lottery assigned."""

    def __call__(self, step):
        return (tf.constant(False), tf.constant(0.0, tf.float32))

    def get_config(self):
        return {"class_name": self.__class__.__name__, "config": {}}


class KeepPruned:
    """Variable constraint: after each optimizer update, the weight's pruned entries are 0 again.

    Runs after the layer's own constraint (if any), so both hold.
    """

    def __init__(self, mask: tf.Variable, inner=None):
        self.mask, self.inner = mask, inner

    def __call__(self, weight):
        if self.inner is not None:
            weight = self.inner(weight)
        return weight * tf.cast(self.mask, weight.dtype)  # masks are exactly 0 or 1 (checked when read back)


@dataclasses.dataclass(frozen=True)
class Prunable:
    """One masked weight: its key, wrapper, kernel and mask variables, and its kind ('fc' or 'conv')."""

    name: str
    wrapper: object
    kernel: tf.Variable
    mask: tf.Variable
    kind: str


# -- what gets pruned ----------------------------------------------------------------------------
def is_prunable(layer) -> bool:
    """Layers TF-MOT can prune (Dense, Conv*, Embedding, RNN, ...) and any `PrunableLayer`."""
    if isinstance(layer, keras.Model):
        return False
    if isinstance(layer, _PrunableLayer):
        return True
    registry = prune_registry.PruneRegistry
    if layer.__class__ in registry._LAYERS_WEIGHTS_MAP:  # noqa: SLF001
        return bool(registry._LAYERS_WEIGHTS_MAP[layer.__class__])  # noqa: SLF001
    return bool(registry.supports(layer))


def unpruned_weights(model: keras.Model) -> list[tuple[str, str, int]]:
    """(layer, class, weight count) of each layer holding a kernel-like weight (rank >= 2) that stays dense."""
    out = []
    for layer in _leaf_layers(model):
        if is_prunable(layer) or _is_wrapper(layer):
            continue
        kernels = [w for w in layer.trainable_weights if len(w.shape) >= 2]
        if kernels:
            out.append((layer.name, type(layer).__name__, int(sum(np.prod(w.shape) for w in kernels))))
    return out


def _leaf_layers(model) -> list:
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_leaf_layers(layer))
        else:
            out.append(layer)
    return out


def check_keras_model(model) -> None:
    """Refuse what TF-MOT cannot wrap (non-tf-keras objects, subclassed models) in one line."""
    if not isinstance(model, keras.Model):
        kind = type(model).__module__ + "." + type(model).__name__
        if is_keras3_model(model):
            raise ValueError(
                f"model {model.name!r} is a Keras 3 model, not a tf-keras model, which TF-MOT needs; "
                "carry it over with tf_lottery.keras3.to_tf_keras(model) (find_ticket does it for you)"
            )
        raise ValueError(
            f"model of type {kind} is not a tf-keras model; build it with `import tf_keras as keras`, "
            "or pass a Keras 3 Sequential or functional model (tf_lottery carries it over)"
        )
    _check_graph_model(model)


def _check_graph_model(model) -> None:
    if not (isinstance(model, keras.Sequential) or model._is_graph_network):  # noqa: SLF001
        raise ValueError(
            f"model {model.name!r} is a subclassed model; TF-MOT wraps only Sequential and functional models"
        )
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            _check_graph_model(layer)


# -- wrapping -----------------------------------------------------------------------------------
def wrap(model: keras.Model, warn: bool = True) -> keras.Model:
    """A copy of `model` with every prunable layer in a prune_low_magnitude wrapper, weights shared.

    Nested Sequential and functional models are wrapped inside. Each layer with a kernel that
    cannot be pruned is named in one warning line with its weight count (it stays dense).
    """
    check_keras_model(model)
    if any(_is_wrapper(layer) for layer in _leaf_layers(model)):
        prepare(model)
        return model

    def clone(layer):
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=clone)
        if is_prunable(layer):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=FixedMask())
        return layer

    wrapped = keras.models.clone_model(model, clone_function=clone)
    if not prunables(wrapped):
        raise ValueError(f"model {model.name!r} has no layer to prune (Dense, Conv, Embedding or a PrunableLayer)")
    if warn:
        for name, kind, count in unpruned_weights(wrapped):
            warnings.warn(
                f"tf_lottery: layer {name!r} ({kind}) has {count:,} weights that stay dense; implement "
                "tfmot.sparsity.keras.PrunableLayer to prune it",
                stacklevel=2,
            )
    prepare(wrapped)
    return wrapped


@tf.autograph.experimental.do_not_convert
def _no_op():
    return tf.no_op()


def prepare(wrapped: keras.Model) -> None:
    """Freeze TF-MOT's schedule and put the keep-pruned constraint on every masked weight (idempotent).

    TF-MOT's per-step mask update and weight*mask assignment cost 6-8% of a Lenet-300-100 step
    (benchmarks/imp_vs_fit.py) and would re-prune by their own schedule; the constraint alone
    keeps pruned weights at 0.
    """
    for wrapper in _wrappers(wrapped):
        if getattr(wrapper, "_tf_lottery_prepared", False):
            continue
        if not wrapper.built:
            continue
        wrapper.pruning_obj.conditional_mask_update = _no_op
        wrapper.pruning_obj.weight_mask_op = _no_op
        for kernel, mask, _ in wrapper.pruning_vars:
            kernel = getattr(kernel, "_variable", kernel)  # under mixed precision, an AutoCastVariable's own
            for component in getattr(kernel, "values", (kernel,)):
                inner = component.constraint
                if not isinstance(inner, KeepPruned):
                    component._constraint = KeepPruned(mask, inner)  # noqa: SLF001
        if int(wrapper.pruning_step.numpy()) < 0:
            wrapper.pruning_step.assign(0)  # TF-MOT starts it at -1 and asserts it counts from 0
        wrapper._tf_lottery_prepared = True  # noqa: SLF001


def _is_wrapper(layer) -> bool:
    # TF-MOT 0.8 does not export its wrapper class; its wrappers are the layers with pruning_vars.
    return hasattr(layer, "pruning_vars") and hasattr(layer, "layer")


def _wrappers(model) -> list:
    out = []
    for layer in model.layers:
        if _is_wrapper(layer):
            out.append(layer)
        elif isinstance(layer, keras.Model):
            out.extend(_wrappers(layer))
    return out


def _kind(layer, kernel) -> str:
    conv_types = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.SeparableConv1D,
                  keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D)
    if isinstance(layer, conv_types) or len(kernel.shape) >= 3:
        return "conv"
    return "fc"


def prunables(wrapped: keras.Model, prefix: str = "") -> list[Prunable]:
    """Every masked weight of the model, in model order (nested models in place)."""
    out = []
    for layer in wrapped.layers:
        if _is_wrapper(layer) and layer.pruning_vars:
            several = len(layer.pruning_vars) > 1
            for kernel, mask, _ in layer.pruning_vars:
                name = prefix + layer.layer.name
                if several:
                    name += "/" + kernel.name.split("/")[-1].split(":")[0]
                out.append(Prunable(name, layer, kernel, mask, _kind(layer.layer, kernel)))
        elif isinstance(layer, keras.Model):
            out.extend(prunables(layer, prefix + layer.name + "/"))
    return out


def prunable_layers(wrapped: keras.Model) -> list:
    """The pruning wrappers that hold a mask, in model order."""
    seen, out = set(), []
    for p in prunables(wrapped):
        if id(p.wrapper) not in seen:
            seen.add(id(p.wrapper))
            out.append(p.wrapper)
    return out


def layer_name(wrapper) -> str:
    return wrapper.layer.name


def layer_kinds(wrapped: keras.Model) -> dict[str, str]:
    """'fc' for Dense-like weights, 'conv' for convolutions: the paper prunes them at different rates."""
    return {p.name: p.kind for p in prunables(wrapped)}


def output_layer_name(wrapped: keras.Model) -> str:
    """The last masked weight, taken to be the output layer's (pruned at half rate by default)."""
    return prunables(wrapped)[-1].name


def kernel_shapes(wrapped: keras.Model) -> dict[str, tuple]:
    return {p.name: tuple(p.kernel.shape) for p in prunables(wrapped)}


def get_masks(wrapped: keras.Model) -> dict[str, np.ndarray]:
    return {p.name: p.mask.numpy() for p in prunables(wrapped)}


def get_kernels(wrapped: keras.Model) -> dict[str, np.ndarray]:
    return {p.name: p.kernel.numpy() for p in prunables(wrapped)}


def set_masks(wrapped: keras.Model, masks: Mapping[str, np.ndarray]) -> None:
    """Write masks into the wrappers and zero the pruned weights right away."""
    entries = {p.name: p for p in prunables(wrapped)}
    if set(entries) != set(masks):
        raise ValueError(
            f"masks are for layers {sorted(masks)} but the model's prunable layers are {sorted(entries)}"
        )
    for name, p in entries.items():
        value = np.asarray(masks[name], np.float32)
        if tuple(value.shape) != tuple(p.mask.shape):
            raise ValueError(
                f"mask for layer {name!r} has shape {tuple(value.shape)} "
                f"but the model's kernel has shape {tuple(p.mask.shape)}"
            )
        p.mask.assign(value)
        p.kernel.assign(p.kernel.numpy() * value)


def _is_bookkeeping(variable) -> bool:
    leaf = variable.name.split("/")[-1].split(":")[0]
    return leaf in _BOOKKEEPING


def model_variables(wrapped: keras.Model) -> list:
    """All parameters and statistics of the model, without TF-MOT's mask bookkeeping."""
    return [v for v in wrapped.weights if not _is_bookkeeping(v)]


def snapshot(wrapped: keras.Model) -> list[np.ndarray]:
    """A copy of every parameter (kernels, biases, normalization statistics) of the model."""
    return [v.numpy().copy() for v in model_variables(wrapped)]


def shapes(wrapped: keras.Model) -> list[tuple]:
    """The shapes of `snapshot()`'s tensors."""
    return [tuple(v.shape) for v in model_variables(wrapped)]


def restore(wrapped: keras.Model, values: list[np.ndarray]) -> None:
    """Reset all parameters to `values`, then zero the pruned weights: survivors equal `values` bit for bit."""
    variables = model_variables(wrapped)
    if len(variables) != len(values):
        raise ValueError(f"snapshot has {len(values)} tensors but the model has {len(variables)}")
    for variable, value in zip(variables, values):
        if tuple(variable.shape) != tuple(np.shape(value)):
            raise ValueError(
                f"snapshot tensor for {variable.name!r} has shape {np.shape(value)}, "
                f"the model's has {tuple(variable.shape)}"
            )
        variable.assign(value)
    for p in prunables(wrapped):
        p.kernel.assign(p.kernel.numpy() * p.mask.numpy())


def kernel_positions(wrapped: keras.Model) -> dict[str, int]:
    """Index of each masked kernel inside `snapshot()`'s list."""
    ids = {id(v): i for i, v in enumerate(model_variables(wrapped))}
    return {p.name: ids[id(p.kernel)] for p in prunables(wrapped)}


def reinitialized(wrapped: keras.Model, values: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """A copy of `values` whose masked kernels are drawn afresh from their layers' initializers.

    This is the random re-initialization control: same architecture and mask, new theta_0.
    Other parameters keep their values (zeros and ones for biases and normalization at theta_0).
    """
    values = [v.copy() for v in values]
    positions = kernel_positions(wrapped)
    for i, p in enumerate(prunables(wrapped)):
        initializer = getattr(p.wrapper.layer, "kernel_initializer", None) or keras.initializers.GlorotNormal()
        config = initializer.get_config()
        if "seed" in config:
            config["seed"] = int(seed) * 1009 + i
            fresh = type(initializer).from_config(config)
        else:
            fresh = keras.initializers.GlorotNormal(seed=int(seed) * 1009 + i)
        pos = positions[p.name]
        values[pos] = fresh(values[pos].shape, dtype=tf.float32).numpy()
    return values


def count_pruned_nonzero(wrapped: keras.Model) -> int:
    """How many pruned positions hold a non-zero weight (0 whenever the invariant holds), on every replica."""
    total = 0
    for p in prunables(wrapped):
        for kernel, mask in zip(getattr(p.kernel, "values", (p.kernel,)), getattr(p.mask, "values", (p.mask,))):
            total += int(np.count_nonzero(kernel.numpy()[mask.numpy() == 0]))
    return total


def strip(wrapped: keras.Model) -> keras.Model:
    """The model without wrappers: pruned weights are 0 in plain layers."""
    return tfmot.sparsity.keras.strip_pruning(wrapped)


def weights_remaining_all(wrapped: keras.Model, masks: Mapping[str, np.ndarray]) -> float:
    """Surviving fraction of all trainable parameters (pruned kernels, plus everything left dense)."""
    masked = {id(p.kernel) for p in prunables(wrapped)}
    dense = sum(int(np.prod(v.shape)) for v in wrapped.trainable_weights if id(v) not in masked)
    total = dense + sum(m.size for m in masks.values())
    return float((dense + sum(int(np.count_nonzero(m)) for m in masks.values())) / total)


def masked_optimizer(optimizer, wrapped=None):
    """No longer needed: masks hold with any optimizer (see the module docstring). Returns `optimizer`."""
    warnings.warn("tf_lottery.masked_optimizer is no longer needed; pass your optimizer as it is",
                  DeprecationWarning, stacklevel=2)
    return optimizer


def custom_objects() -> dict:
    """What `keras.models.load_model` needs to load a saved wrapped model (see `load_model`)."""
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

    return {"FixedMask": FixedMask, "PruneLowMagnitude": pruning_wrapper.PruneLowMagnitude}


def load_model(path: str, **kwargs) -> keras.Model:
    """Load a wrapped model saved with `model.save` (.keras, .h5 or SavedModel), masks kept at 0 again."""
    with keras.utils.custom_object_scope(custom_objects()):
        model = keras.models.load_model(path, **kwargs)
    prepare(model)
    return model
