"""Wrap a Keras model in TF-MOT pruning wrappers and read and write its masks and weights.

TF-MOT's own schedule is frozen (`FixedMask` never fires), so masks change only when
tf_lottery writes them; gradients of pruned weights are masked by `masked_optimizer`, so
pruned weights stay exactly 0 at every step. That makes TF-MOT's per-step weight*mask
assignment redundant, and `wrap` turns it off (it cost ~6% of a Lenet step).
Mask keys are the names of the wrapped (original) layers.
"""

from __future__ import annotations

from typing import Mapping, Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_lottery._tfmot import tfmot


_PRUNABLE_TYPES = (
    keras.layers.Dense,
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
)
_BOOKKEEPING = ("mask", "threshold", "pruning_step")


class FixedMask(tfmot.sparsity.keras.PruningSchedule):
    """A TF-MOT schedule that never prunes: the mask stays whatever tf_lottery assigned."""

    def __call__(self, step):
        return (tf.constant(False), tf.constant(0.0, tf.float32))

    def get_config(self):
        return {"class_name": self.__class__.__name__, "config": {}}


def is_prunable(layer: keras.layers.Layer) -> bool:
    """Dense and convolution layers are pruned; biases, normalization and the rest never."""
    return isinstance(layer, _PRUNABLE_TYPES)


def check_keras_model(model) -> None:
    """Refuse non-tf-keras models and subclassed models with a one-line explanation."""
    if not isinstance(model, keras.Model):
        from tf_lottery import keras3

        kind = type(model).__module__ + "." + type(model).__name__
        if keras3.is_keras3_model(model):
            raise ValueError(
                f"model {model.name!r} is a Keras 3 model, not a tf-keras model, which TF-MOT needs; "
                "carry it over with tf_lottery.keras3.to_tf_keras(model)"
            )
        raise ValueError(
            f"model of type {kind} is not a tf-keras model; build it with `import tf_keras as keras` "
            "or with Keras 3 and tf_lottery.keras3.to_tf_keras"
        )
    if not (isinstance(model, keras.Sequential) or model._is_graph_network):
        raise ValueError(
            f"model {model.name!r} is a subclassed model; TF-MOT wraps only Sequential and functional models"
        )


def wrap(model: keras.Model) -> keras.Model:
    """Return `model` with every Dense/Conv layer in a prune_low_magnitude wrapper (weights shared)."""
    check_keras_model(model)
    if any(_is_wrapper(layer) for layer in model.layers):
        return model

    def clone(layer):
        if is_prunable(layer):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=FixedMask())
        return layer

    wrapped = keras.models.clone_model(model, clone_function=clone)
    if not prunable_layers(wrapped):
        raise ValueError(f"model {model.name!r} has no Dense or Conv layer to prune")
    # The wrappers count steps themselves; TF-MOT asserts the count starts at >= 0.
    for layer in prunable_layers(wrapped):
        layer.pruning_step.assign(0)
        _skip_per_step_masking(layer)
    return wrapped


@tf.autograph.experimental.do_not_convert
def _no_op():
    return tf.no_op()


def _skip_per_step_masking(wrapper) -> None:
    """Drop TF-MOT's per-step mask update and weight*mask assignment from a wrapper's forward pass.

    Masks are fixed during a round (the update never fires) and `masked_optimizer` keeps pruned
    weights at exactly 0, so both only cost time: 6-8% of a Lenet-300-100 training step on CPU
    (benchmarks/imp_vs_fit.py). Training such a model therefore requires `masked_optimizer`.
    """
    wrapper.pruning_obj.conditional_mask_update = _no_op
    wrapper.pruning_obj.weight_mask_op = _no_op
    wrapper._tf_lottery_fixed_mask = True


def needs_masked_optimizer(wrapped: keras.Model) -> bool:
    """True when the model's wrappers rely on `masked_optimizer` to keep pruned weights at 0."""
    return any(getattr(w, "_tf_lottery_fixed_mask", False) for w in prunable_layers(wrapped))


def is_masked_optimizer_for(optimizer, wrapped: keras.Model) -> bool:
    """True when `optimizer` masks the gradient of every prunable kernel of `wrapped`."""
    bound = getattr(optimizer, "_tf_lottery_masked_kernels", None)
    return bound is not None and all(id(kernel) in bound for kernel, _ in mask_bindings(wrapped))


def prunable_layers(wrapped: keras.Model) -> list:
    """The pruning wrappers that hold a mask, in model order."""
    return [
        layer
        for layer in wrapped.layers
        if _is_wrapper(layer) and layer.pruning_vars
    ]


def _is_wrapper(layer) -> bool:
    # TF-MOT 0.8 does not export its wrapper class; its wrappers are the layers with pruning_vars.
    return hasattr(layer, "pruning_vars") and hasattr(layer, "layer")


def layer_name(wrapper) -> str:
    return wrapper.layer.name


def layer_kinds(wrapped: keras.Model) -> dict[str, str]:
    """'fc' for Dense layers, 'conv' for convolutions: the paper prunes them at different rates."""
    return {
        layer_name(w): "fc" if isinstance(w.layer, keras.layers.Dense) else "conv"
        for w in prunable_layers(wrapped)
    }


def output_layer_name(wrapped: keras.Model) -> str:
    """The last prunable layer, taken to be the output layer (pruned at half rate by default)."""
    return layer_name(prunable_layers(wrapped)[-1])


def get_masks(wrapped: keras.Model) -> dict[str, np.ndarray]:
    return {layer_name(w): w.pruning_vars[0][1].numpy() for w in prunable_layers(wrapped)}


def get_kernels(wrapped: keras.Model) -> dict[str, np.ndarray]:
    return {layer_name(w): w.pruning_vars[0][0].numpy() for w in prunable_layers(wrapped)}


def set_masks(wrapped: keras.Model, masks: Mapping[str, np.ndarray]) -> None:
    """Write masks into the wrappers and zero the pruned weights right away."""
    layers = {layer_name(w): w for w in prunable_layers(wrapped)}
    if set(layers) != set(masks):
        raise ValueError(
            f"masks are for layers {sorted(masks)} but the model's prunable layers are {sorted(layers)}"
        )
    for name, wrapper in layers.items():
        weight, mask_var, _ = wrapper.pruning_vars[0]
        value = np.asarray(masks[name], np.float32)
        if tuple(value.shape) != tuple(mask_var.shape):
            raise ValueError(
                f"mask for layer {name!r} has shape {tuple(value.shape)} "
                f"but the model's kernel has shape {tuple(mask_var.shape)}"
            )
        mask_var.assign(value)
        weight.assign(weight.numpy() * value)


def _is_bookkeeping(variable) -> bool:
    leaf = variable.name.split("/")[-1].split(":")[0]
    return leaf in _BOOKKEEPING


def model_variables(wrapped: keras.Model) -> list:
    """All parameters and statistics of the model, without TF-MOT's mask bookkeeping."""
    return [v for v in wrapped.weights if not _is_bookkeeping(v)]


def snapshot(wrapped: keras.Model) -> list[np.ndarray]:
    """A copy of every parameter (kernels, biases, normalization statistics) of the model."""
    return [v.numpy().copy() for v in model_variables(wrapped)]


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
    for wrapper in prunable_layers(wrapped):
        weight, mask, _ = wrapper.pruning_vars[0]
        weight.assign(weight.numpy() * mask.numpy())


def kernel_positions(wrapped: keras.Model) -> dict[str, int]:
    """Index of each prunable kernel inside `snapshot()`'s list."""
    ids = {id(v): i for i, v in enumerate(model_variables(wrapped))}
    out = {}
    for wrapper in prunable_layers(wrapped):
        weight = wrapper.pruning_vars[0][0]
        out[layer_name(wrapper)] = ids[id(weight)]
    return out


def reinitialized(wrapped: keras.Model, values: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """A copy of `values` whose prunable kernels are drawn afresh from their layers' initializers.

    This is the random re-initialization control: same architecture and mask, new theta_0.
    Other parameters keep their initial values (zeros and ones for biases and normalization).
    """
    values = [v.copy() for v in values]
    positions = kernel_positions(wrapped)
    for i, wrapper in enumerate(prunable_layers(wrapped)):
        layer = wrapper.layer
        initializer = getattr(layer, "kernel_initializer", None) or keras.initializers.GlorotNormal()
        config = initializer.get_config()
        if "seed" in config:
            config["seed"] = int(seed) * 1009 + i
            fresh = type(initializer).from_config(config)
        else:
            fresh = keras.initializers.GlorotNormal(seed=int(seed) * 1009 + i)
        pos = positions[layer_name(wrapper)]
        values[pos] = fresh(values[pos].shape, dtype=tf.float32).numpy()
    return values


def mask_bindings(wrapped: keras.Model) -> list[tuple]:
    """(kernel variable, mask variable) pairs, for masking gradients."""
    return [(w.pruning_vars[0][0], w.pruning_vars[0][1]) for w in prunable_layers(wrapped)]


def masked_optimizer(optimizer: keras.optimizers.Optimizer, wrapped: keras.Model):
    """An optimizer of the same class and settings that multiplies each kernel's gradient by its mask.

    Without this, Adam moves pruned weights between TF-MOT's re-masking points; with it and a
    fresh optimizer per round, pruned weights never leave 0.
    """
    bindings = {id(kernel): mask for kernel, mask in mask_bindings(wrapped)}
    base = type(optimizer)

    class Masked(base):
        def apply_gradients(self, grads_and_vars, *args, **kwargs):
            masked = []
            for grad, var in grads_and_vars:
                mask = bindings.get(id(var))
                if mask is not None and grad is not None:
                    grad = grad * tf.cast(mask, grad.dtype)
                masked.append((grad, var))
            return super().apply_gradients(masked, *args, **kwargs)

    Masked.__name__ = "Masked" + base.__name__
    masked = Masked.from_config(optimizer.get_config())
    masked._tf_lottery_masked_kernels = frozenset(bindings)
    return masked


def strip(wrapped: keras.Model) -> keras.Model:
    """The model without wrappers: pruned weights are 0 in plain Dense/Conv kernels."""
    return tfmot.sparsity.keras.strip_pruning(wrapped)


def count_pruned_nonzero(wrapped: keras.Model) -> int:
    """How many pruned positions hold a non-zero weight (0 whenever the invariant holds)."""
    total = 0
    for wrapper in prunable_layers(wrapped):
        weight, mask, _ = wrapper.pruning_vars[0]
        total += int(np.count_nonzero(weight.numpy()[mask.numpy() == 0]))
    return total


def layer_rates(
    wrapped: keras.Model, fc_rate: float, conv_rate: float, output_rate: Optional[float]
) -> dict[str, float]:
    """The per-round pruning rate of each layer: by kind, and the output layer at half rate by default."""
    kinds = layer_kinds(wrapped)
    rates = {name: fc_rate if kind == "fc" else conv_rate for name, kind in kinds.items()}
    out = output_layer_name(wrapped)
    rates[out] = output_rate if output_rate is not None else rates[out] / 2.0
    return rates
