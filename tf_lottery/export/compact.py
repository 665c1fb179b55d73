"""A ticket rebuilt smaller: every unit or filter that carries no signal removed, stock layers only.

A unit carries no signal when every weight it feeds is pruned (its outgoing rows in each layer
that reads it: a unit-granularity ticket masks them with the unit), or when every weight feeding
it is pruned: it then outputs a constant (its bias, through its activation and normalization),
which is folded into the bias of each layer that reads it, where that is exact (Dense layers and
`valid` convolutions; in a `same` convolution the zero padding makes the constant's contribution
vary at the borders, so such a unit is kept unless its constant is exactly 0). Units tied by an Add
are removed together, from every layer of the tie; the output layer keeps all its units.

The result is a plain tf-keras model (Dense layers with fewer units, convolutions with fewer
filters, BatchNormalization sliced with them), so TF Serving and TFLite run it with their stock
dense kernels. `compact_model` also says, per pruned layer, which input rows and units survive,
which the export's metadata records and its verification uses to put the kernel back in place.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np
import tf_keras as keras

from tf_lottery.masking import unit_graph

_UNIT_LAYERS = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
SUBJECT = "format='compact'"


@dataclasses.dataclass(frozen=True)
class Kept:
    """What survives of one pruned layer: its kernel's input rows (or channels) and its units."""

    rows: np.ndarray
    units: np.ndarray
    original_shape: tuple
    shape: tuple


@dataclasses.dataclass(frozen=True)
class Compacted:
    """The smaller model, what survives of each pruned layer, and the units removed in all."""

    model: keras.Model
    kept: Mapping[str, Kept]
    removed_units: int
    total_units: int  # units of the layers that could lose any (all but the output layer)

    def summary(self) -> str:
        """One line: what was removed, or that nothing was (the export then equals the dense one)."""
        if not self.removed_units:
            return "compact: no unit or filter carries no signal, nothing to remove; this export equals the dense one"
        changed = [f"{n} {k.original_shape[-1]}->{k.shape[-1]}" for n, k in self.kept.items()
                   if k.shape[-1] != k.original_shape[-1]]
        return (f"compact: removed {self.removed_units} of {self.total_units} units and filters that carry no signal "
                f"({', '.join(changed)})")


def compact_model(stripped: keras.Model, masks: Mapping[str, np.ndarray]) -> Compacted:
    """`stripped` (plain layers, pruned weights 0) without the units that carry no signal.

    Raises a one-line ValueError naming the layer when the model's graph cannot be traced (a
    subclassed model, a layer that mixes units, a layer called twice).
    """
    layers = {layer.name: layer for layer in stripped.layers}
    unit_layers = tuple(layer.name for layer in stripped.layers if isinstance(layer, _UNIT_LAYERS))
    output_layer = stripped.outputs[0]._keras_history.layer.name  # noqa: SLF001
    units = unit_graph.trace(stripped, unit_layers, output_layer=output_layer if output_layer in unit_layers else None,
                             subject=SUBJECT)
    kernels = {n: layers[n].kernel.numpy() * masks.get(n, 1.0) for n in unit_layers}
    dead_out, dead_in = _dead_units(units, kernels)
    constants = _constants(stripped, units, dead_in, dead_out)
    alive = _alive(stripped, units, dead_out, dead_in, constants)
    channel_kept = {n: [_kept_channels(c, alive) for c in cs] for n, cs in units.inputs.items()}
    kept = {}
    for name in unit_layers:
        rows = np.flatnonzero(channel_kept[name][0])
        columns = np.flatnonzero(alive[units.group_of[name]])
        shape = kernels[name].shape
        kept[name] = Kept(rows, columns, tuple(shape), (*shape[:-2], len(rows), len(columns)))
    model = _rebuild(stripped, {n: len(k.units) for n, k in kept.items()})
    _copy_weights(stripped, model, units, kept, channel_kept, kernels, constants)
    movable = [g for g in units.groups if not g.fixed]
    removed = sum(int(g.size - np.sum(alive[i])) for i, g in enumerate(units.groups) if not g.fixed)
    return Compacted(model, kept, removed, sum(g.size for g in movable))


def _dead_units(units: unit_graph.UnitMap, kernels: Mapping[str, np.ndarray]) -> tuple[list, list]:
    """Per group: units whose outgoing weights are all pruned, and units whose incoming weights are."""
    dead_out = [np.ones(g.size, bool) for g in units.groups]
    dead_in = [np.ones(g.size, bool) for g in units.groups]
    for i, group in enumerate(units.groups):
        for producer in group.producers:
            dead_in[i] &= ~np.any(kernels[producer].reshape(-1, group.size) != 0, axis=0)
    for name, kernel in kernels.items():
        rows = units.kernel_rows(name)
        used = np.any(kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1]) != 0, axis=(0, 2))
        for g, u, is_used in zip(rows.group, rows.unit, used):
            if g >= 0 and is_used:
                dead_out[g][u] = False
    return dead_out, dead_in


def _constants(stripped, units, dead_in, dead_out) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per unit layer that reads units whose inputs are all pruned: its input's value on one example (first
    position) and whether each channel is the same at every position (so its contribution is a constant)."""
    wanted = [n for n, cs in units.inputs.items() if n in units.group_of and any(
        g >= 0 and dead_in[g][u] and not dead_out[g][u] for g, u in zip(cs[0].group, cs[0].unit))]
    if not wanted:
        return {}
    # A fresh copy, whose layers each have one call: a stripped ticket's layers may also belong to other models.
    copy = keras.models.clone_model(stripped)
    copy.set_weights(stripped.get_weights())
    probe = keras.Model(copy.inputs, [copy.get_layer(n).input for n in wanted])
    values = probe(np.zeros((1, *stripped.input_shape[1:]), np.float32), training=False)
    values = values if isinstance(values, (list, tuple)) else [values]
    out = {}
    for name, value in zip(wanted, values):
        flat = np.asarray(value).reshape(-1, np.shape(value)[-1])
        out[name] = (flat[0], np.all(flat == flat[0], axis=0))
    return out


def _alive(stripped, units, dead_out, dead_in, constants) -> list[np.ndarray]:
    """Per group: the units kept. A constant unit goes only where each reader can take its constant exactly:
    a Dense layer or a `valid` convolution, with the constant the same at every position (or exactly 0)."""
    alive = [np.ones(g.size, bool) if g.fixed else ~(dead_out[i] | dead_in[i]) for i, g in enumerate(units.groups)]
    layers = {layer.name: layer for layer in stripped.layers}
    for name, (value, uniform) in constants.items():
        foldable = isinstance(layers[name], keras.layers.Dense) or getattr(layers[name], "padding", "") == "valid"
        rows = units.kernel_rows(name)
        for g, u, v, same in zip(rows.group, rows.unit, value, uniform):
            if g >= 0 and dead_in[g][u] and not dead_out[g][u] and not (same and (foldable or v == 0)):
                alive[g][u] = True
    return alive


def _kept_channels(channels: unit_graph.Channels, alive: list[np.ndarray]) -> np.ndarray:
    return np.array([g < 0 or alive[g][u] for g, u in zip(channels.group, channels.unit)], bool)


def _rebuild(stripped: keras.Model, sizes: Mapping[str, int]) -> keras.Model:
    """A clone of `stripped` whose unit layers have `sizes` units (every other layer as it was)."""

    def clone(layer):
        config = layer.get_config()
        if layer.name in sizes:
            config["units" if isinstance(layer, keras.layers.Dense) else "filters"] = int(sizes[layer.name])
        return layer.__class__.from_config(config)

    model = keras.models.clone_model(stripped, clone_function=clone)
    if not model.built:
        model.build(stripped.input_shape)
    return model


def _copy_weights(stripped, model, units, kept, channel_kept, kernels, constants) -> None:
    """Every layer's weights, sliced to what survives; constants folded into their readers' biases."""
    new_layers = {layer.name: layer for layer in model.layers}
    for layer in stripped.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        name = layer.name
        if name in kept:
            k = kept[name]
            kernel = kernels[name]
            sliced = kernel[..., k.rows, :][..., k.units]
            new = [sliced]
            if layer.use_bias:
                bias = weights[1].astype(np.float64)
                if name in constants:
                    dropped = ~channel_kept[name][0]  # the readers' rows removed: constants, or weights all pruned
                    spatial = kernel.reshape(-1, kernel.shape[-2], kernel.shape[-1]).sum(axis=0, dtype=np.float64)
                    bias = bias + constants[name][0][dropped].astype(np.float64) @ spatial[dropped]
                new.append(bias[k.units].astype(weights[1].dtype))
            new_layers[name].set_weights(new)
        elif type(layer).__name__ == "BatchNormalization":
            keep = channel_kept[name][0]
            new_layers[name].set_weights([w[keep] for w in weights])
        else:
            target = new_layers[name]
            if [w.shape for w in target.get_weights()] != [w.shape for w in weights]:
                raise ValueError(f"{SUBJECT} cannot shrink layer {name!r} ({type(layer).__name__}): its weights "
                                 "depend on the units removed before it")
            target.set_weights(weights)
