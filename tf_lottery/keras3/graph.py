"""Rebuilding a Sequential or functional model's graph from one Keras API into the other.

The two Keras (Keras 3 and tf-keras) keep the same layer classes under the same names; this module
walks a model's graph in one of them and calls the same layers of the other on the same tensors,
translating each layer's config key by key (`Rebuild`), behind a small adapter per API (`_Api`).
`tf_lottery.keras3` is the public side; this module is its machinery and relies on private graph
attributes of both Keras (node lists, call arguments), which its tests pin down.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any, Optional

import numpy as np

# Classes that exist under the same name in keras.layers and tf_keras.layers, take the same
# config keys and compute the same function. Recurrent, attention and lambda layers do not.
SUPPORTED_LAYERS = (
    "Activation", "Add", "Average", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "BatchNormalization", "Concatenate", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D",
    "Dense", "Dropout", "Embedding", "Flatten", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "GlobalMaxPooling3D", "InputLayer", "LayerNormalization",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "Maximum", "Minimum", "Multiply",
    "Normalization", "Permute", "ReLU", "Rescaling", "Reshape", "SeparableConv2D", "Softmax",
    "Subtract", "UpSampling2D", "ZeroPadding2D",
)

# Activations that both Keras compute identically (checked on a grid from -6 to 6).
# hard_sigmoid is missing on purpose: Keras 3 changed its formula.
SUPPORTED_ACTIVATIONS = (
    "elu", "exponential", "gelu", "leaky_relu", "linear", "log_softmax", "mish", "relu",
    "relu6", "selu", "sigmoid", "softmax", "softplus", "softsign", "swish", "silu", "tanh",
)

SUPPORTED_POLICIES = ("float16", "bfloat16", "float32", "float64", "mixed_float16", "mixed_bfloat16")

# Keys that say how a layer was first built, not what it computes: the rebuilt graph's
# Input carries the shape instead.
_SHAPE_KEYS = ("batch_input_shape", "batch_shape", "input_shape", "input_dim", "input_length")
# A key only one Keras knows can be dropped when it holds its "feature off" value.
_INACTIVE = {"groups": 1}


class _Api:
    """What the rebuild needs to know of one Keras: its modules and how it stores a graph."""

    def __init__(self, package: str, display: str):
        self.package = package  # the name a user imports: keras or tf_keras
        self.display = display  # the name in messages: Keras 3 or tf-keras

    @property
    def module(self):
        import importlib

        return importlib.import_module(self.package)

    def is_sequential(self, model) -> bool:
        return isinstance(model, self.module.Sequential)

    def is_model(self, obj) -> bool:
        return isinstance(obj, self.module.Model)


class _Keras3Api(_Api):
    def is_functional(self, model) -> bool:
        from keras.src.models.functional import Functional

        return type(model) in (Functional, self.module.Model) and hasattr(model, "_nodes_by_depth")

    def is_tensor(self, obj) -> bool:
        return isinstance(obj, self.module.KerasTensor)

    def inputs_struct(self, model):
        return model._inputs_struct

    def outputs_struct(self, model):
        return model._outputs_struct

    def nodes(self, model):
        """(layer, args, kwargs, outputs) for every call in the model's graph, in topological order."""
        for depth in sorted(model._nodes_by_depth, reverse=True):
            for node in model._nodes_by_depth[depth]:
                if node.is_input or node.operation is None:
                    continue
                yield node.operation, node.arguments.args, node.arguments.kwargs, node.outputs

    def input_spec(self, tensor) -> dict:
        if getattr(tensor, "sparse", False) or getattr(tensor, "ragged", False):
            raise ValueError(f"input {tensor.name!r} is sparse or ragged; only dense inputs can be carried over")
        return {
            "name": tensor._keras_history[0].name,
            "shape": tuple(tensor.shape[1:]),
            "batch_size": tensor.shape[0],
            "dtype": str(tensor.dtype),
        }

    def map_structure(self, fn, structure):
        return self.module.tree.map_structure(fn, structure)

    def flatten(self, structure):
        return self.module.tree.flatten(structure)


class _TfKerasApi(_Api):
    def is_functional(self, model) -> bool:
        from tf_keras.src.engine.functional import Functional

        return type(model) in (Functional, self.module.Model) and getattr(model, "_is_graph_network", False)

    def is_tensor(self, obj) -> bool:
        from tf_keras.src.engine.keras_tensor import KerasTensor

        return isinstance(obj, KerasTensor)

    def inputs_struct(self, model):
        return model._nested_inputs

    def outputs_struct(self, model):
        return model._nested_outputs

    def nodes(self, model):
        for depth in sorted(model._nodes_by_depth, reverse=True):
            for node in model._nodes_by_depth[depth]:
                if node.is_input:
                    continue
                yield node.layer, node.call_args, node.call_kwargs, self.flatten(node.outputs)

    def input_spec(self, tensor) -> dict:
        import tensorflow as tf

        if not isinstance(tensor.type_spec, tf.TensorSpec):
            raise ValueError(f"input {tensor.name!r} is sparse or ragged; only dense inputs can be carried over")
        return {
            "name": tensor._keras_history[0].name,
            "shape": tuple(tensor.shape[1:]),
            "batch_size": tensor.shape[0],
            "dtype": tensor.dtype.name,
        }

    def map_structure(self, fn, structure):
        import tensorflow as tf

        return tf.nest.map_structure(fn, structure)

    def flatten(self, structure):
        import tensorflow as tf

        return tf.nest.flatten(structure)


KERAS3 = _Keras3Api("keras", "Keras 3")
TF_KERAS = _TfKerasApi("tf_keras", "tf-keras")


class Rebuild:
    """One rebuild of a model from `source`'s Keras into `target`'s, sharing layers called twice."""

    def __init__(self, source: _Api, target: _Api, masks: Optional[dict] = None):
        self.source, self.target = source, target
        self.masks = masks or {}
        self.layers: dict[int, Any] = {}  # id(source layer) -> target layer
        self.pairs: list[tuple] = []  # (source layer, target layer) whose weights to copy

    def model(self, model):
        """The target-Keras copy of `model` with its weights; raises before building on any refusal."""
        self.check(model)
        rebuilt = self._build(model)
        for source_layer, target_layer in self.pairs:
            copy_weights(target_layer, masked_weights(source_layer, self.masks), source_layer)
        return rebuilt

    def check(self, model) -> None:
        """Refuse, in one line, the first layer or setting that cannot be carried over."""
        src = self.source
        if not (src.is_sequential(model) or src.is_functional(model)):
            raise ValueError(
                f"model {model.name!r} ({class_path(type(model))}) is a subclassed model; only "
                f"Sequential and functional {src.display} models can be carried over to {self.target.display}"
            )
        if not model.built or not getattr(model, "inputs", None):
            raise ValueError(
                f"model {model.name!r} is not built; give it an Input (keras.Input(shape)) or call it "
                "on data before carrying it over"
            )
        for tensor in _input_tensors(src, model):
            src.input_spec(tensor)
        for layer in self._source_layers(model):
            if src.is_model(layer):
                self.check(layer)
            else:
                self._config(layer)

    def _source_layers(self, model) -> list:
        if self.source.is_sequential(model):
            return list(model.layers)
        return [layer for layer, *_ in self.source.nodes(model)]

    def _build(self, model):
        src, dst = self.source, self.target.module
        inputs = [dst.Input(**src.input_spec(t)) for t in _input_tensors(src, model)]
        if src.is_sequential(model):
            layers = [self._layer(layer) for layer in model.layers]
            return dst.Sequential([inputs[0], *layers], name=model.name)
        values = {id(x): y for x, y in zip(src.flatten(src.inputs_struct(model)), inputs)}

        def value_of(obj):
            return values[id(obj)] if src.is_tensor(obj) else obj

        for layer, args, kwargs, outputs in src.nodes(model):
            args, kwargs = src.map_structure(value_of, (tuple(args), dict(kwargs)))
            result = self._layer(layer)(*args, **kwargs)
            for x, y in zip(outputs, self.target.flatten(result)):
                values[id(x)] = y
        input_struct = _pack(src, src.inputs_struct(model), inputs)
        output_struct = src.map_structure(value_of, src.outputs_struct(model))
        return dst.Model(inputs=input_struct, outputs=output_struct, name=model.name)

    def _layer(self, layer):
        """The target layer for `layer`, created once per source layer."""
        key = id(layer)
        if key not in self.layers:
            if self.source.is_model(layer):
                self.layers[key] = self._build(layer)
            else:
                target_class, config = self._config(layer)
                try:
                    self.layers[key] = target_class.from_config(config)
                except (TypeError, ValueError) as e:
                    raise ValueError(
                        f"layer {layer.name!r} ({class_path(type(layer))}) cannot be rebuilt in "
                        f"{self.target.display}: {' '.join(str(e).split())}"
                    ) from e
                if layer.weights:
                    self.pairs.append((layer, self.layers[key]))
        return self.layers[key]

    def _config(self, layer) -> tuple:
        """The target class and a config it accepts, or a one-line ValueError."""
        src, dst = self.source, self.target
        name = type(layer).__name__
        where = f"layer {layer.name!r} ({class_path(type(layer))})"
        if not isinstance(layer, src.module.layers.Layer):
            raise ValueError(
                f"operation {layer.name!r} ({class_path(type(layer))}) cannot be carried over to "
                f"{dst.display}: only layers can (use a layer such as Add or Activation instead of an op "
                f"on tensors); supported: {', '.join(SUPPORTED_LAYERS)}"
            )
        target_class = getattr(dst.module.layers, name, None)
        if name not in SUPPORTED_LAYERS or getattr(src.module.layers, name, None) is not type(layer) or target_class is None:
            raise ValueError(
                f"{where} cannot be carried over to {dst.display}; supported: {', '.join(SUPPORTED_LAYERS)}"
            )
        policy = layer.dtype_policy.name
        if policy not in SUPPORTED_POLICIES:
            raise ValueError(
                f"{where} has dtype policy {policy!r}, which cannot be carried over to {dst.display}; "
                f"supported: {', '.join(SUPPORTED_POLICIES)}"
            )
        config = {key: _plain(value) for key, value in layer.get_config().items()}
        config["dtype"] = policy
        if name == "BatchNormalization" and isinstance(config.get("axis"), list):
            # A built tf-keras BatchNormalization stores [axis]; Keras 3 takes one int only.
            if len(config["axis"]) != 1:
                raise ValueError(f"{where} normalizes over axes {config['axis']}; Keras 3 takes one axis only")
            config["axis"] = config["axis"][0]
        accepted = _accepted_keys(target_class)
        for key in list(config):
            value = config[key]
            if key not in accepted:
                # Initializers only matter for fresh weights, and the weights are copied.
                inactive = value is None or value is False or (key in _INACTIVE and _INACTIVE[key] == value)
                if key in _SHAPE_KEYS or inactive or key.endswith("_initializer"):
                    del config[key]
                    continue
                raise ValueError(f"{where} sets {key}={value!r}, which {dst.display} has no equivalent for")
            if key == "activation":
                config[key] = _activation(value, where, dst)
            elif key.endswith(("_initializer", "_regularizer", "_constraint")) and value is not None:
                config[key] = _object(key, value, where, dst)
        return target_class, config


def _input_tensors(api: _Api, model) -> list:
    if api.is_sequential(model):
        return list(model.inputs)
    return api.flatten(api.inputs_struct(model))


def _accepted_keys(cls) -> set:
    """Constructor arguments of `cls` and of the base classes its **kwargs reach."""
    keys = {"name", "trainable", "dtype", "activity_regularizer"}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        keys |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return keys


def _activation(value, where: str, target: _Api):
    if value is None or (isinstance(value, str) and value in SUPPORTED_ACTIVATIONS):
        return value
    shown = value if isinstance(value, str) else (value.get("class_name") if isinstance(value, dict) else value)
    raise ValueError(
        f"{where} uses activation {shown!r}, which cannot be carried over to {target.display}; "
        f"supported: {', '.join(SUPPORTED_ACTIVATIONS)}"
    )


def _object(key: str, value, where: str, target: _Api):
    """An initializer, regularizer or constraint of the target Keras, from its serialized form."""
    kind = {"_initializer": "initializers", "_regularizer": "regularizers", "_constraint": "constraints"}[
        "_" + key.rsplit("_", 1)[1]
    ]
    if isinstance(value, str):
        value = {"class_name": value, "config": {}}
    if not isinstance(value, dict) or "class_name" not in value:
        raise ValueError(f"{where} has {key}={value!r}, which cannot be carried over to {target.display}")
    class_name = value["class_name"]
    cls = getattr(getattr(target.module, kind), class_name, None)
    if not inspect.isclass(cls) or value.get("registered_name") not in (None, class_name):
        raise ValueError(
            f"{where} has {key} {class_name!r}, which {target.display} does not provide as {target.package}.{kind}.{class_name}"
        )
    config = dict(value.get("config") or {})
    accepted = _accepted_keys(cls)
    for name in list(config):
        if name not in accepted:
            if config[name] is None:
                del config[name]
            else:
                raise ValueError(
                    f"{where} has {key} {class_name} with {name}={config[name]!r}, which "
                    f"{target.display} has no equivalent for"
                )
    try:
        return cls(**config)
    except (TypeError, ValueError) as e:
        detail = " ".join(str(e).split())
        raise ValueError(f"{where} has {key} {class_name} with a config {target.display} refuses: {detail}") from e


def _plain(value):
    """tf-keras keeps lists in tracking wrappers (ListWrapper); Keras 3 checks for plain types."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _pack(api: _Api, structure, flat: list):
    """`flat` in the nesting of `structure` (a tensor, a list, or a dict of inputs)."""
    iterator = iter(flat)
    return api.map_structure(lambda _: next(iterator), structure)


def class_path(cls) -> str:
    """`keras.layers.Dense` for public Keras classes, the defining module otherwise."""
    module = cls.__module__ or ""
    for package in ("keras", "tf_keras"):
        public = sys.modules.get(package)
        if public is not None and module.startswith(package + "."):
            for namespace in ("layers", "models", "ops"):
                if getattr(getattr(public, namespace, None), cls.__name__, None) is cls:
                    return f"{package}.{namespace}.{cls.__name__}"
    return f"{module}.{cls.__qualname__}"


def masked_weights(layer, masks) -> list:
    """The layer's weights, with its kernel zeroed where its mask is 0 (a copy; the layer is unchanged)."""
    values = layer.get_weights()
    mask = masks.get(id(layer))
    if mask is not None:
        index = next(i for i, w in enumerate(layer.weights) if w is layer.kernel)
        values[index] = np.where(mask != 0, values[index], np.zeros_like(values[index]))
    return values


def copy_weights(target, values, source) -> None:
    shapes = [tuple(np.shape(v)) for v in values]
    expected = [tuple(w.shape) for w in target.weights]
    if shapes != expected:
        raise ValueError(
            f"layer {source.name!r}: weight shapes {shapes} do not fit {class_path(type(target))} "
            f"weights {expected}"
        )
    target.set_weights(values)
    if hasattr(target, "finalize_state") and type(target).__name__ == "Normalization":
        # Normalization broadcasts its adapted mean and variance once; refresh them.
        target.finalize_state()
