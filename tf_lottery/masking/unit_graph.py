"""Where each layer's input channels come from: a model's graph traced once, as plain arrays.

Structured pruning removes whole *units* (a Dense layer's output units, a convolution's filters).
A pruned unit must carry no signal, so its outgoing weights go too: every kernel row (Dense) or
input channel (convolution) it feeds is masked. A compact export removes the same units from the
network. Both need to know, for every layer input, which producer unit each channel is; this
module traces that through the layers that keep channels apart (activations, BatchNormalization,
dropout, pooling, padding, Flatten, Concatenate). An Add (or another elementwise merge) ties the
units of its inputs: tied units form one group and are pruned together; units tied to the network's
input (or to the output layer) are kept whole. A layer that mixes channels (LayerNormalization,
Reshape, a softmax over units, ...) is refused in one line when a prunable unit flows into it.

Only tf-keras Sequential and functional models whose pruned layers are top-level Dense or
Conv1D/2D/3D layers (each called once) can be traced; anything else is refused in one line.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

import numpy as np
import tf_keras as keras

# Layers whose output channel c is a function of input channel c alone (and shape, not mixing units).
_PASS_THROUGH = (
    "BatchNormalization", "Activation", "ReLU", "LeakyReLU", "ELU", "ThresholdedReLU", "Dropout", "SpatialDropout1D",
    "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout", "MaxPooling1D",
    "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "GlobalMaxPooling3D", "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D",
    "Cropping2D", "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D", "Rescaling", "ActivityRegularization",
)
_MERGES = ("Add", "Subtract", "Average", "Maximum", "Minimum")
_UNIT_LAYERS = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_MIXING_ACTIVATIONS = ("softmax", "log_softmax")


@dataclasses.dataclass(frozen=True)
class Channels:
    """Per channel of a tensor's last axis: the unit group it belongs to (-1: no prunable unit) and its unit."""

    group: np.ndarray
    unit: np.ndarray

    @classmethod
    def unprunable(cls, size: int) -> "Channels":
        return cls(np.full(size, -1, np.int64), np.arange(size, dtype=np.int64))

    @classmethod
    def of_group(cls, group: int, size: int) -> "Channels":
        return cls(np.full(size, group, np.int64), np.arange(size, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.group)


@dataclasses.dataclass(frozen=True)
class UnitGroup:
    """Units pruned together: one layer's, or several layers' tied by an Add. `fixed` groups keep every unit."""

    producers: tuple[str, ...]
    size: int
    fixed: bool
    why_fixed: str = ""


@dataclasses.dataclass(frozen=True)
class UnitMap:
    """The traced graph: unit groups, the group of each pruned layer, and each layer's input channels.

    `inputs[layer]` lists, for each input of a layer (one for most layers), where its last-axis
    channels come from; `outputs[layer]` the same for its output. Layer names are the model's.
    """

    groups: tuple[UnitGroup, ...]
    group_of: Mapping[str, int]
    inputs: Mapping[str, tuple[Channels, ...]]
    outputs: Mapping[str, Channels]
    order: tuple[str, ...]  # layer names in graph order
    classes: Mapping[str, str]  # layer name -> class name

    def kernel_rows(self, name: str) -> Channels:
        """Where the input rows (Dense) or input channels (convolution) of pruned layer `name` come from."""
        return self.inputs[name][0]


def _inner(layer):
    """The layer a TF-MOT wrapper holds (or the layer itself)."""
    return layer.layer if hasattr(layer, "pruning_vars") and hasattr(layer, "layer") else layer


def _class(layer) -> str:
    return type(_inner(layer)).__name__


def _inbound(model: keras.Model, layer, index: int) -> list:
    """The layers feeding `layer` in `model` (Sequential: the one before it)."""
    if isinstance(model, keras.Sequential):
        return [] if index == 0 else [model.layers[index - 1]]
    nodes = [n for n in layer._inbound_nodes if n in _model_nodes(model)]  # noqa: SLF001
    if len(nodes) != 1:
        raise ValueError(f"layer {layer.name!r} is called {len(nodes)} times in model {model.name!r}; structured "
                         "pruning needs each layer called once")
    return list(nodes[0].inbound_layers) if isinstance(nodes[0].inbound_layers, (list, tuple)) else [nodes[0].inbound_layers]


def _model_nodes(model) -> list:
    cached = getattr(model, "_tf_lottery_nodes", None)
    if cached is None:
        cached = [node for nodes in model._nodes_by_depth.values() for node in nodes]  # noqa: SLF001
        try:
            model._tf_lottery_nodes = cached  # noqa: SLF001
        except AttributeError:
            pass
    return cached


def _last_dim(layer) -> int:
    shape = layer.output_shape
    if isinstance(shape, list):
        shape = shape[0]
    return int(shape[-1])


class _Tracer:
    """Walks the model once, building groups and channels; a union-find joins tied groups."""

    def __init__(self, model: keras.Model, pruned: tuple[str, ...], output_layer: str, subject: str):
        self.model, self.pruned, self.output_layer, self.subject = model, set(pruned), output_layer, subject
        self.parent: list[int] = []
        self.producers: list[list[str]] = []
        self.sizes: list[int] = []
        self.fixed: dict[int, str] = {}
        self.inputs: dict[str, tuple[Channels, ...]] = {}
        self.outputs: dict[str, Channels] = {}

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a

    def new_group(self, producer: str, size: int) -> int:
        self.parent.append(len(self.parent))
        self.producers.append([producer])
        self.sizes.append(size)
        return len(self.parent) - 1

    def refuse(self, layer, why: str) -> None:
        raise ValueError(f"{self.subject} cannot go through layer {_inner(layer).name!r} ({_class(layer)}): "
                         f"{why}")

    def prunable_units(self, channels: Channels) -> bool:
        """Whether any channel is a unit that may be pruned (the output layer's units are kept whole)."""
        return any(g >= 0 and not any(self.find(h) == self.find(int(g)) for h in self.fixed) for g in set(channels.group))

    def step(self, layer, ins: list[Channels]) -> Channels:
        inner = _inner(layer)
        name = inner.name
        kind = type(inner).__name__
        if isinstance(inner, keras.layers.InputLayer):
            return Channels.unprunable(_last_dim(layer))
        if isinstance(inner, keras.Model):
            self.refuse(layer, "a nested model; structured pruning traces only top-level layers")
        if name in self.pruned:
            if not isinstance(inner, _UNIT_LAYERS) or getattr(inner, "groups", 1) != 1:
                self.refuse(layer, "only Dense and Conv1D/2D/3D layers (groups=1) have units to prune")
            if getattr(inner, "data_format", "channels_last") != "channels_last":
                self.refuse(layer, "channels_first data; allowed: channels_last")
            size = int(inner.units if isinstance(inner, keras.layers.Dense) else inner.filters)
            group = self.new_group(name, size)
            if name == self.output_layer:
                self.fixed[group] = "the output layer keeps all its units"
            return Channels.of_group(group, size)
        if kind in _PASS_THROUGH:
            if kind == "Activation" and getattr(inner, "activation", None) is not None and \
                    getattr(inner.activation, "__name__", "") in _MIXING_ACTIVATIONS and self.prunable_units(ins[0]):
                self.refuse(layer, "a softmax mixes the units it takes, so pruned units would still carry signal")
            if getattr(inner, "data_format", "channels_last") not in ("channels_last", None):
                self.refuse(layer, "channels_first data; allowed: channels_last")
            if kind == "BatchNormalization" and _bn_axis(inner) != len(inner.input_shape) - 1:
                self.refuse(layer, "normalizes another axis than the last (the units)")
            return ins[0]
        if kind == "Flatten":
            shape = inner.input_shape
            positions = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
            return Channels(np.tile(ins[0].group, positions), np.tile(ins[0].unit, positions))
        if kind == "Concatenate" and inner.axis in (-1, len(inner.input_shape[0]) - 1):
            return Channels(np.concatenate([c.group for c in ins]), np.concatenate([c.unit for c in ins]))
        if kind in _MERGES:
            return self.merge(layer, ins)
        if any(self.prunable_units(c) for c in ins):
            self.refuse(layer, "it mixes the units it takes (allowed between pruned layers: activations, "
                        "BatchNormalization, dropout, pooling, padding, Flatten, Concatenate, Add)")
        return Channels.unprunable(_last_dim(layer))

    def merge(self, layer, ins: list[Channels]) -> Channels:
        """An elementwise merge ties unit i of every input: join their groups (or keep them whole)."""
        sizes = {len(c) for c in ins}
        if len(sizes) != 1:
            self.refuse(layer, "its inputs have different numbers of channels")
        whole = [c for c in ins if c.group.size and np.all(c.group == c.group[0]) and c.group[0] >= 0
                 and np.array_equal(c.unit, np.arange(len(c)))]
        if len(whole) == len(ins):
            for c in whole[1:]:
                self.union(int(whole[0].group[0]), int(c.group[0]))
            return ins[0]
        # Units tied to the network input (or to a mixture of groups) cannot be pruned: keep them whole.
        for c in ins:
            for g in set(int(x) for x in c.group if x >= 0):
                self.fixed[g] = f"layer {layer.name!r} adds them to channels that are not a pruned layer's units"
        return ins[0] if self.prunable_units(ins[0]) else next((c for c in ins if self.prunable_units(c)), ins[0])

    def trace(self) -> UnitMap:
        model = self.model
        order, classes = [], {}
        for index, layer in enumerate(model.layers):
            feeding = _inbound(model, layer, index)
            ins = [self.outputs[_inner(f).name] for f in feeding]
            if isinstance(model, keras.Sequential) and index == 0 and not isinstance(_inner(layer), keras.layers.InputLayer):
                ins = [Channels.unprunable(int(model.input_shape[-1]))]
            name = _inner(layer).name
            self.inputs[name] = tuple(ins)
            self.outputs[name] = self.step(layer, ins)
            order.append(name)
            classes[name] = _class(layer)
        self.check_outputs()
        return self.build(tuple(order), classes)

    def check_outputs(self) -> None:
        out_layers = self.model.outputs
        for tensor in out_layers:
            name = _inner(tensor._keras_history.layer).name  # noqa: SLF001
            channels = self.outputs[name]
            for g in set(int(x) for x in channels.group if x >= 0):
                root = self.find(g)
                if not any(self.find(h) == root and h in self.fixed for h in range(len(self.parent))):
                    raise ValueError(
                        f"{self.subject}: units of layer {self.producers[g][0]!r} reach the model's "
                        f"output through {name!r} without a layer that could mask them; allowed: a model whose last "
                        "pruned layer is its output layer")

    def build(self, order, classes) -> UnitMap:
        roots = sorted({self.find(g) for g in range(len(self.parent))})
        index = {root: i for i, root in enumerate(roots)}
        groups, group_of = [], {}
        for root in roots:
            members = [g for g in range(len(self.parent)) if self.find(g) == root]
            producers = tuple(p for g in members for p in self.producers[g])
            why = next((self.fixed[g] for g in members if g in self.fixed), "")
            groups.append(UnitGroup(producers, self.sizes[root], bool(why), why))
            for p in producers:
                group_of[p] = index[root]

        def relabel(c: Channels) -> Channels:
            return Channels(np.array([index[self.find(int(g))] if g >= 0 else -1 for g in c.group], np.int64), c.unit)

        return UnitMap(
            groups=tuple(groups), group_of=group_of,
            inputs={n: tuple(relabel(c) for c in cs) for n, cs in self.inputs.items()},
            outputs={n: relabel(c) for n, c in self.outputs.items()},
            order=order, classes=classes,
        )


def _bn_axis(layer) -> int:
    axis = layer.axis
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    if isinstance(axis, (list, tuple)):
        return -99
    rank = len(layer.input_shape)
    return axis % rank


def trace(model: keras.Model, pruned: tuple[str, ...], output_layer: Optional[str] = None,
          granularity: str = "unit", subject: Optional[str] = None) -> UnitMap:
    """The unit map of `model` (wrapped or plain) whose layers named in `pruned` have units to prune.

    `output_layer` (default: the last of `pruned`) keeps all its units. Raises a one-line
    ValueError naming the layer that cannot be traced, beginning with `subject` (default:
    `granularity='unit'`).
    """
    subject = subject or f"granularity={granularity!r}"
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise ValueError(f"{subject} needs a Sequential or functional model; {model.name!r} is "
                         "subclassed")
    nested = [n for n in pruned if "/" in n]
    if nested:
        raise ValueError(f"{subject} prunes top-level layers only; {nested[0]!r} is inside a "
                         "nested model")
    return _Tracer(model, tuple(pruned), output_layer or pruned[-1], subject).trace()
