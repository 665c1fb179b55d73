"""Export a ticket as a new TF Serving version: check every option, write the version under a
temporary name, verify it against the model given, and only then rename it into place.

Every option is checked before any directory is made; a version that fails (an error, a kill, a
failed check) is never seen by TF Serving, and the next export removes what a killed one left.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Optional, Union

import numpy as np
import tf_keras as keras

from tf_lottery import files
from tf_lottery.export import saved_model, versions
from tf_lottery.export.compact import compact_model
from tf_lottery.masking import masks as mask_math
from tf_lottery.masking import pruning
from tf_lottery.search import checkpoints, training
from tf_lottery.export.layout import (
    FORMATS, INPUT_NAME, MAX_WARMUP, METADATA_FILE, OUTPUT_NAMES, SIGNATURE, TFLITE_FILE, WARMUP_FILE,
)
from tf_lottery.export.loading import ModelSource, check_inputs, load_ticket
from tf_lottery.export.sparse_layers import sparse_model
from tf_lottery.export.verification import Verification, random_images, verify
from tf_lottery.search.run_directory import RunDirectory


@dataclasses.dataclass
class ExportResult:
    """Where a version was written and what its verification found."""

    path: str
    version: int
    format: str
    verification: Verification


class VerificationFailed(ValueError, RuntimeError):
    """The export's check failed, so it was not published (a RuntimeError before 0.2, hence both bases)."""

    def __init__(self, verification: Verification):
        self.verification = verification
        super().__init__(f"export not published, its check failed: {verification.problem()}\n{verification.report()}")


def export_model(
    model: keras.Model,
    export_base: str,
    *,
    format: str = "dense",
    model_name: Optional[str] = None,
    version: Optional[int] = None,
    images: Optional[np.ndarray] = None,
    warmup: int = 0,
    tflite: bool = False,
    overwrite: bool = False,
    metadata: Optional[dict] = None,
) -> ExportResult:
    """Export a trained ticket model (wrapped, or already stripped) as a new TF Serving version.

    The export is checked against `model` itself before it is published. Export the *trained*
    network: `ticket.trained_model(round)` (or `ticket.export`), never `ticket.rewound_model()`,
    the untrained rewind point. When `metadata` names a `run_dir` and `round`, `model` must hold
    that round's trained weights, or nothing is written.

    Args:
      images: float32 inputs in [0, 1] that outputs are checked on and warmup requests hold
        (default: 64 uniform random inputs).
      metadata: extra keys for assets.extra/tf_lottery_export.json (`run_dir`, `round`, ...).

    Raises:
      ValueError: a bad option, a model that cannot be exported or is not the round it claims,
        or an export whose check failed (`VerificationFailed`); nothing is written.
      OSError: the disk is full or not writable; nothing partial is left.
    """
    directory = _check_options(export_base, model_name, format, warmup, version, overwrite)
    metadata = _check_metadata(metadata)
    prepared = _prepare(model, images)
    if metadata.get("run_dir") is not None:
        _check_is_round(prepared.stripped, metadata["run_dir"], metadata.get("round"))
    return _publish(prepared, directory, model_name, format, version, warmup, tflite, overwrite, metadata)


def export_ticket(
    run_dir: str,
    export_base: str,
    round: Union[str, int] = "best",
    format: str = "dense",
    *,
    model_name: Optional[str] = None,
    version: Optional[int] = None,
    warmup: int = 0,
    tflite: bool = False,
    overwrite: bool = False,
    model: ModelSource = None,
    images: Optional[np.ndarray] = None,
) -> ExportResult:
    """Export round `round` ('best', 'last' or a number) of the run in `run_dir` as a TF Serving version.

    The round's trained network is rebuilt from the run (`load_ticket`; `model` only for a run of
    your own model that config.json cannot rebuild). Outputs are checked on the first test images
    of the run's dataset (or `images`; random inputs for a run on your own data).
    """
    directory = _check_options(export_base, model_name, format, warmup, version, overwrite)
    ticket = load_ticket(run_dir, round, model=model)
    check, inputs = (images, "the images given") if images is not None else check_inputs(ticket)
    prepared = dataclasses.replace(_prepare(ticket.wrapped, check), inputs=inputs)
    metadata = {"run_dir": ticket.run_dir, "round": ticket.round, "model": ticket.model_name}
    return _publish(prepared, directory, model_name, format, version, warmup, tflite, overwrite, metadata)


# -- checks before anything is written ----------------------------------------------------------
def _check_options(export_base, model_name, format, warmup, version, overwrite) -> str:
    """The model directory, after every option is checked (nothing is created here)."""
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; allowed: {', '.join(FORMATS)}")
    if not versions.whole_number(warmup) or not 0 <= warmup <= MAX_WARMUP:
        raise ValueError(f"warmup={warmup!r} must be an integer in 0..{MAX_WARMUP} (TF Serving reads at most {MAX_WARMUP})")
    if warmup:
        saved_model.check_warmup_available()
    if isinstance(export_base, os.PathLike):
        export_base = os.fspath(export_base)
    if not isinstance(export_base, str) or not export_base:
        raise ValueError(f"export_base={export_base!r} must be a directory path")
    directory = versions.model_directory(export_base, model_name)
    versions.version_path(directory, version, overwrite)  # refuses a bad or taken version before the slow part
    versions.check_writable(directory)
    return directory


def _check_metadata(metadata: Optional[dict]) -> dict:
    metadata = dict(metadata or {})
    round_index = metadata.get("round")
    if metadata.get("run_dir") is not None and not isinstance(metadata["run_dir"], str):
        raise ValueError(f"metadata run_dir={metadata['run_dir']!r} must be a path")
    if round_index is not None and not (versions.whole_number(round_index) and round_index >= 0):
        raise ValueError(f"metadata round={round_index!r} must be a round number")
    if metadata.get("run_dir") is not None and round_index is None:
        raise ValueError("metadata names a run_dir but no round; give both, or neither")
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata cannot be written as JSON ({e})") from None
    return metadata


@dataclasses.dataclass
class _Prepared:
    """The model given, its plain-layer twin, masks and outputs, and the check images."""

    model: keras.Model
    stripped: keras.Model
    masks: dict
    input_shape: tuple
    model_output: str  # 'logits' or 'probabilities' (the model ends in a softmax)
    images: np.ndarray
    inputs: str = ""  # where `images` came from, for the verification report


def _prepare(model: keras.Model, images: Optional[np.ndarray]) -> _Prepared:
    pruning.check_keras_model(model)
    if isinstance(model.output, (list, tuple)) or isinstance(model.input, (list, tuple)):
        raise ValueError(f"model {model.name!r} has several inputs or outputs; allowed: one image input, one output")
    input_shape = tuple(int(d) for d in model.input_shape[1:])
    if pruning.prunable_layers(model):
        masks, stripped = pruning.get_masks(model), pruning.strip(model)
    else:
        stripped = model
        masks = {layer.name: (layer.kernel.numpy() != 0).astype(np.float32) for layer in model.layers
                 if isinstance(layer, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D))}
    nested = sorted(set(masks) - {layer.name for layer in stripped.layers})
    if nested:
        raise ValueError(f"model {model.name!r} has pruned layers inside nested models ({', '.join(nested)}); "
                         "export supports pruned layers at the top level")
    images = random_images(input_shape) if images is None else np.asarray(images, np.float32)
    if images.shape[1:] != input_shape:
        raise ValueError(f"check images have shape {images.shape[1:]} but the model takes {input_shape}")
    output = OUTPUT_NAMES[1] if training.outputs_probabilities(model) else OUTPUT_NAMES[0]
    return _Prepared(model, stripped, masks, input_shape, output, images)


def _check_is_round(stripped: keras.Model, run_dir: str, round_index: int) -> None:
    """Refuse a model that is not round `round_index`'s trained network of `run_dir` (e.g. the rewind point)."""
    if not os.path.isdir(run_dir):
        raise ValueError(f"metadata run_dir {run_dir!r} does not exist; the model can only be checked against its run")
    run = RunDirectory(run_dir)
    copy = pruning.wrap(keras.models.clone_model(stripped), warn=False)
    checkpoints.restore_round(run, int(round_index), copy)
    pruning.restore(copy, pruning.snapshot(copy))  # pruned weights exactly 0, as in the model given
    trained, given = pruning.strip(copy).get_weights(), stripped.get_weights()
    if len(trained) != len(given) or any(not np.array_equal(t, g) for t, g in zip(trained, given)):
        raise ValueError(
            f"the model given is not the trained network of round {round_index} of {run_dir} (its weights differ "
            f"from {run.checkpoint_prefix(int(round_index))}); export ticket.trained_model({round_index}) or use "
            "ticket.export: ticket.rewound_model() is the untrained rewind point"
        )


# -- writing ------------------------------------------------------------------------------------
def _publish(prepared: _Prepared, directory, model_name, format, version, warmup, tflite, overwrite, metadata) -> ExportResult:
    """Write, verify and rename the version into place; on any failure leave nothing behind."""
    compacted = None
    if format == "sparse":
        served, storage = sparse_model(prepared.stripped, prepared.masks)
    elif format == "compact":
        compacted = compact_model(prepared.stripped, prepared.masks)
        served, storage = compacted.model, {name: "compact" for name in prepared.masks}
    else:
        served, storage = prepared.stripped, {name: "dense" for name in prepared.masks}
    meta = _metadata(prepared, format, storage, metadata, compacted)
    serving_name = model_name or os.path.basename(directory.rstrip(os.sep)) or "model"
    with files.made_directory(directory):
        versions.remove_stale_temporaries(directory)
        version, path = versions.version_path(directory, version, overwrite)
        with saved_model.disk_errors(path), files.atomic_directory(path) as tmp:
            saved_model.save(served, prepared.input_shape, tmp, prepared.model_output)
            _write_extras(tmp, meta, prepared.images, warmup, serving_name)
            if tflite:
                _write_tflite(tmp, prepared, format)  # compact: the SavedModel is itself dense
            check = verify(tmp, images=prepared.images, reference=prepared.model, masks=prepared.masks)
            check.inputs = prepared.inputs or check.inputs
            if not check.ok:
                raise VerificationFailed(check)
            versions.make_readable(tmp)
    check.path = path
    return ExportResult(path=path, version=version, format=format, verification=check)


def _metadata(prepared: _Prepared, format: str, storage: dict, metadata: dict, compacted=None) -> dict:
    layers = {layer.name: layer for layer in prepared.stripped.layers if layer.name in prepared.masks}
    meta = {
        **metadata,
        "format": format,
        "input_shape": list(prepared.input_shape),
        "model_output": prepared.model_output,
        "signature": {"name": SIGNATURE, "inputs": {INPUT_NAME: "float32 [None, H, W, C] in [0, 1]"}, "outputs": list(OUTPUT_NAMES)},
        "weights_remaining": mask_math.weights_remaining(prepared.masks),
        "layers": {
            name: {
                "kind": "fc" if isinstance(layers[name], keras.layers.Dense) else "conv",
                "storage": storage[name],
                "shape": list(layers[name].kernel.shape),
            }
            for name in prepared.masks
        },
    }
    if compacted is not None:
        meta["compact"] = compacted.summary()
        for name, info in meta["layers"].items():
            kept = compacted.kept[name]
            info.update(shape=list(kept.shape), original_shape=list(kept.original_shape),
                        kept_rows=[int(i) for i in kept.rows], kept_units=[int(i) for i in kept.units])
    return meta


def _write_extras(tmp: str, meta: dict, images: np.ndarray, warmup: int, serving_name: str) -> None:
    extra = os.path.join(tmp, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    files.atomic_write_bytes(os.path.join(extra, METADATA_FILE), (json.dumps(meta, indent=1) + "\n").encode())
    if warmup:
        saved_model.write_warmup(os.path.join(extra, WARMUP_FILE), images, int(warmup), serving_name)


def _write_tflite(tmp: str, prepared: _Prepared, format: str) -> None:
    """model.tflite, converted from a dense SavedModel (the version itself, or a dense one made inside it)."""
    if format in ("dense", "compact"):
        content = saved_model.tflite_bytes(tmp)
    else:
        dense_dir = os.path.join(tmp, ".dense_for_tflite")  # inside the version's temporary: removed with it
        saved_model.save(prepared.stripped, prepared.input_shape, dense_dir, prepared.model_output)
        content = saved_model.tflite_bytes(dense_dir)
        shutil.rmtree(dense_dir)
    files.atomic_write_bytes(os.path.join(tmp, TFLITE_FILE), content)
