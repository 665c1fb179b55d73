"""Check an export: its signature, each pruned layer's kernel as stored (pruned weights must be 0),
its size, and its outputs against a reference model.

The reference is the model an export was made from (`export_model` passes it), or else the round
of the run recorded in the export, rebuilt. Outputs are compared in the model's own terms: logits
for a model that outputs logits, probabilities for one that ends in a softmax.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_lottery.export import loading, saved_model
from tf_lottery.export.layout import EXPORT_AGAIN, INPUT_NAME, SIGNATURE, TFLITE_FILE, TOLERANCE, WARMUP_FILE, read_metadata
from tf_lottery.export.sparse_layers import decode_positions
from tf_lottery.export.versions import directory_bytes
from tf_lottery.files import corrupt
from tf_lottery.masking import pruning


@dataclasses.dataclass
class Verification:
    """What an export holds and how its outputs compare with the ticket it came from."""

    path: str
    format: str
    signature: dict
    layers: dict
    size_bytes: int
    tflite_bytes: Optional[int]
    examples: int
    max_abs_diff: Optional[float]
    tflite_max_abs_diff: Optional[float]
    warmup_records: int
    reference: str
    model_output: str = "logits"  # the output compared: the model's own (logits or probabilities)
    notes: tuple = ()  # lines the export's metadata adds (a compact export: what it removed)
    tflite_sparse: Optional[dict] = None  # the tensors model.tflite stores sparse, and their blocks
    inputs: str = ""  # where the compared inputs came from (the dataset's source, or random)
    output_scale: Optional[float] = None  # the largest |output| of the reference on the compared inputs

    @property
    def tolerance(self) -> float:
        """The largest output difference allowed: TOLERANCE of the outputs' scale (at least TOLERANCE).

        A sparse kernel sums its products in another order than a dense one, so float32 outputs of the
        same network differ by a few ulps of their own size: logits of about 10 from a 12,544-input
        layer differ by ~1e-5 (a Conv-2 ticket did). A fixed 1e-5 refused such exports; a wrong weight
        moves outputs by far more than 1e-5 of their scale."""
        return TOLERANCE * max(1.0, self.output_scale or 0.0)

    @property
    def ok(self) -> bool:
        diffs = [d for d in (self.max_abs_diff, self.tflite_max_abs_diff) if d is not None]
        pruned = sum(layer.get("pruned_nonzero", 0) for layer in self.layers.values())
        return all(d <= self.tolerance for d in diffs) and pruned == 0

    def _tolerance_text(self) -> str:
        if self.tolerance == TOLERANCE:
            return f"tolerance {TOLERANCE:g}"
        return f"tolerance {self.tolerance:.2e}: {TOLERANCE:g} of the largest |output|, {self.output_scale:.3g}"

    def problem(self) -> str:
        """Why the check failed, in one line ('' when it passed)."""
        problems = []
        if self.max_abs_diff is not None and not self.max_abs_diff <= self.tolerance:
            problems.append(f"{self.model_output} differ from {self.reference} by {self.max_abs_diff:.2e}")
        if self.tflite_max_abs_diff is not None and not self.tflite_max_abs_diff <= self.tolerance:
            problems.append(f"TFLite {self.model_output} differ by {self.tflite_max_abs_diff:.2e}")
        pruned = {n: l["pruned_nonzero"] for n, l in self.layers.items() if l.get("pruned_nonzero")}
        if pruned:
            problems.append(f"pruned weights non-zero in {pruned}")
        return "; ".join(problems) + (f" ({self._tolerance_text()})" if problems else "")

    def report(self) -> str:
        lines = [f"export {self.path} ({self.format}): {self.size_bytes:,} bytes on disk"]
        lines.extend(f"  {note}" for note in self.notes)
        if self.tflite_bytes is not None:
            lines.append(f"  {TFLITE_FILE}: {self.tflite_bytes:,} bytes")
        for kind in ("inputs", "outputs"):
            described = ", ".join(f"{n} {d} {s}" for n, (d, s) in sorted(self.signature[kind].items()))
            lines.append(f"  {SIGNATURE} {kind}: {described}")
        for name, layer in self.layers.items():
            of = f" of {tuple(layer['original_shape'])}" if "original_shape" in layer else ""
            lines.append(
                f"  layer {name}: {layer['storage']} kernel {tuple(layer['shape'])}{of}, "
                f"{100 * layer['weights_remaining']:.2f}% weights remaining"
                + (f", {layer['pruned_nonzero']} pruned weights non-zero" if "pruned_nonzero" in layer else "")
            )
        if self.warmup_records:
            lines.append(f"  warmup: {self.warmup_records} PredictionLog records")
        if self.max_abs_diff is None:
            lines.append(f"  outputs: not compared ({self.reference})")
        else:
            lines.append(f"  outputs vs {self.reference} on {self.examples} examples: max |diff| {self.max_abs_diff:.2e}"
                         + (" (probabilities: the model ends in a softmax)" if self.model_output == "probabilities" else ""))
            if self.inputs:
                lines.append(f"  inputs: {self.inputs}")
        if self.tflite_max_abs_diff is not None:
            lines.append(f"  TFLite outputs: max |diff| {self.tflite_max_abs_diff:.2e}")
        if self.tflite_sparse:
            stored = ", ".join(f"{tuple(t['shape'])} in {'x'.join(map(str, t['block']))} blocks"
                               for t in self.tflite_sparse.values())
            lines.append(f"  TFLite sparse weights: {stored}")
        lines.append(f"  OK ({self._tolerance_text()})" if self.ok else f"  FAILED ({self._tolerance_text()}; pruned weights must be 0)")
        return "\n".join(lines)


def verify(
    export_dir: str,
    images: Optional[np.ndarray] = None,
    reference: Optional[keras.Model] = None,
    masks: Optional[dict] = None,
    run_dir: Optional[str] = None,
) -> Verification:
    """Load an export and report its signature, per-layer sparsity, size and output agreement.

    The reference is `reference` (the model exported) or else the run and round recorded in the
    export (or `run_dir`); without one, only the TFLite file is compared with the SavedModel.
    """
    meta, loaded, signature = _open_export(export_dir)
    label = "the model given" if reference is not None else "no reference"
    inputs = "the images given" if images is not None else ""
    if reference is None:
        reference, masks, images, label, inputs = _reference_from_run(meta, run_dir, images, inputs)
    if reference is not None and masks is None and pruning.prunable_layers(reference):
        masks = pruning.get_masks(reference)
    output = meta["model_output"]

    def served(x):
        return signature(**{INPUT_NAME: tf.constant(x)})[output].numpy()

    tflite_path = os.path.join(export_dir, TFLITE_FILE)
    expected = diff = None  # what the export is held against: the reference's outputs, else (TFLite only) the SavedModel's
    if images is not None and reference is not None:
        expected = _outputs(reference, images)
        diff = float(np.max(np.abs(expected - saved_model.predict(served, images))))
    elif images is not None and os.path.exists(tflite_path):
        expected = saved_model.predict(served, images)
    tflite_bytes = tflite_diff = tflite_sparse = None
    if os.path.exists(tflite_path):
        tflite_bytes = os.path.getsize(tflite_path)
        tflite_sparse = saved_model.tflite_sparsity(tflite_path)
        if expected is not None:
            tflite_diff = float(np.max(np.abs(saved_model.tflite_outputs(tflite_path, images, output) - expected)))
    return Verification(
        path=os.path.abspath(export_dir),
        format=meta["format"],
        signature=_signature_specs(signature),
        layers=_layer_reports(export_dir, meta, loaded, masks),
        size_bytes=directory_bytes(export_dir, exclude=(TFLITE_FILE,)),
        tflite_bytes=tflite_bytes,
        examples=len(images) if diff is not None or tflite_diff is not None else 0,
        max_abs_diff=diff,
        tflite_max_abs_diff=tflite_diff,
        warmup_records=saved_model.count_warmup(os.path.join(export_dir, "assets.extra", WARMUP_FILE)),
        reference=label,
        model_output=output,
        inputs=inputs,
        notes=tuple(n for n in [meta.get("compact")] if isinstance(n, str)),
        tflite_sparse=tflite_sparse,
        output_scale=float(np.max(np.abs(expected))) if expected is not None and expected.size else None,
    )


def _open_export(export_dir: str):
    """The export's checked metadata, the loaded SavedModel and its `serving_default` signature."""
    if not os.path.exists(export_dir):
        raise ValueError(f"{export_dir!r} does not exist; give an export version directory (<export_base>/<version>)")
    if not os.path.isdir(export_dir) or not tf.saved_model.contains_saved_model(export_dir):
        raise ValueError(f"{export_dir!r} holds no SavedModel")
    meta = read_metadata(export_dir)
    loaded = tf.saved_model.load(export_dir)
    if SIGNATURE not in loaded.signatures:
        raise ValueError(f"{export_dir!r} has no {SIGNATURE!r} signature (has {sorted(loaded.signatures)})")
    if not hasattr(loaded, "layer_variables"):
        raise ValueError(f"{export_dir!r} is not a tf_lottery export (its SavedModel has no layer_variables)")
    return meta, loaded, loaded.signatures[SIGNATURE]


def _reference_from_run(meta: dict, run_dir: Optional[str], images: Optional[np.ndarray], inputs: str):
    """(reference, masks, images, label, inputs): the run's round recorded in the export, rebuilt, if the
    run is there. A `run_dir` the caller names must exist; the one the export recorded may be gone."""
    if run_dir is not None and not os.path.isdir(run_dir):
        raise ValueError(f"run_dir={run_dir!r} does not exist or is not a directory; give the run the export came "
                         "from, or leave run_dir out to use the one the export records")
    source = run_dir or meta.get("run_dir")
    if not source:
        return None, None, images, "no reference", inputs
    if not os.path.isdir(source):
        return None, None, images, f"no reference: run directory {source} is gone", inputs
    if meta.get("round") is None:
        raise ValueError(f"the export records no round of {source}; pass the model exported (reference=)")
    ticket = loading.load_ticket(source, meta["round"], input_shape=meta["input_shape"])
    if images is None:
        images, inputs = loading.check_inputs(ticket)
    if images is None:
        images = random_images(tuple(meta["input_shape"]))
    return ticket.wrapped, ticket.masks, images, f"round {ticket.round} of {source}", inputs


def random_images(input_shape: tuple, count: int = 64) -> np.ndarray:
    """Uniform inputs in [0, 1] (a fixed seed), for checks when no real images are at hand."""
    return np.random.default_rng(0).random((count, *input_shape), dtype=np.float32)


def _signature_specs(signature) -> dict:
    def spec(tensor_spec) -> tuple[str, list]:
        return tensor_spec.dtype.name, [None if d is None else int(d) for d in tensor_spec.shape]

    return {
        "inputs": {n: spec(s) for n, s in signature.structured_input_signature[1].items()},
        "outputs": {n: spec(s) for n, s in signature.structured_outputs.items()},
    }


def _outputs(model: keras.Model, images: np.ndarray) -> np.ndarray:
    return saved_model.predict(lambda x: np.asarray(model(x, training=False), np.float32), images)


def _layer_reports(export_dir: str, meta: dict, loaded, masks: Optional[dict]) -> dict:
    """Storage, shape and weights remaining of each pruned layer, counted from the kernel as stored."""
    constants = _graph_positions(export_dir)
    layers = {}
    for name, info in meta["layers"].items():
        dense = _stored_kernel(export_dir, name, info, loaded, constants)
        layer = {
            "storage": info["storage"],
            "kind": info["kind"],
            "shape": list(info["shape"]),
            "weights_remaining": float(np.count_nonzero(dense)) / dense.size,
        }
        if info["storage"] == "compact":
            layer["original_shape"] = list(info["original_shape"])
        if masks is not None and name in masks:
            layer["pruned_nonzero"] = int(np.count_nonzero(dense[masks[name] == 0]))
        layers[name] = layer
    return layers


def _stored_kernel(export_dir: str, name: str, info: dict, loaded, constants: dict) -> np.ndarray:
    """Layer `name`'s kernel as the export stores it, made dense (sparse: values at their positions)."""
    path = os.path.join(export_dir, "saved_model.pb")
    held = {k: v.numpy() for k, v in loaded.layer_variables.get(name, {}).items()}
    shape = tuple(info["shape"])
    size = int(np.prod(shape))
    if info["storage"] in ("dense", "compact"):
        if "kernel" not in held or tuple(held["kernel"].shape) != shape:
            raise corrupt(path, f"holds no kernel of shape {shape} for layer {name!r} (the metadata says it does)", EXPORT_AGAIN)
        if info["storage"] == "dense":
            return held["kernel"]
        full = np.zeros(tuple(info["original_shape"]), np.float32)  # back in place: removed rows and units are 0
        rows, units = np.asarray(info["kept_rows"], np.int64), np.asarray(info["kept_units"], np.int64)
        full[..., rows[:, None], units[None, :]] = held["kernel"]
        return full
    positions, values = constants.get(name), held.get("values")
    if positions is None or values is None or len(positions) != len(values) or (len(positions) and (
            positions.min() < 0 or positions.max() >= size)):
        raise corrupt(path, f"holds no sparse kernel of shape {shape} for layer {name!r} (the metadata says it does)", EXPORT_AGAIN)
    dense = np.zeros(size, np.float32)
    dense[positions] = values
    if info["kind"] == "fc":  # positions index the transposed kernel
        return dense.reshape(shape[::-1]).T
    return dense.reshape(shape)


def _graph_positions(export_dir: str) -> dict[str, np.ndarray]:
    """The constant kernel positions of each sparse layer, read from saved_model.pb's functions."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    found = {}
    for graph in saved.meta_graphs:
        for function in graph.graph_def.library.function:
            for node in function.node_def:
                parts = node.name.split("/")
                if node.op == "Const" and len(parts) >= 2 and parts[-1] == "positions":
                    found[parts[-2]] = decode_positions(tf.make_ndarray(node.attr["value"].tensor).reshape(-1))
    return found
