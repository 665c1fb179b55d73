"""What an export holds: its file names, its signature, and its metadata file (checked when read).

assets.extra/tf_lottery_export.json says how the version was made: its format, input shape,
whether the model's own output was logits or probabilities, each pruned layer's kind, storage
and kernel shape (a compact export: also the kernel's original shape and the input rows and units
kept), and (for a round of a run) the run directory and round it came from.
"""

from __future__ import annotations

import json
import os
from typing import Any

from tf_lottery.files import corrupt

FORMATS = ("dense", "sparse", "compact")
SIGNATURE = "serving_default"
INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "probabilities")
MODEL_OUTPUTS = OUTPUT_NAMES  # what the exported model itself outputs: logits, or probabilities (a softmax)
METADATA_FILE = "tf_lottery_export.json"
WARMUP_FILE = "tf_serving_warmup_requests"
TFLITE_FILE = "model.tflite"
MAX_WARMUP = 1000  # TF Serving reads at most 1000 warmup records.
CHECK_EXAMPLES = 512
TOLERANCE = 1e-5
LAYER_KINDS = ("fc", "conv")
EXPORT_AGAIN = "export the round again (lottery-export --overwrite)"


def metadata_path(export_dir: str) -> str:
    return os.path.join(export_dir, "assets.extra", METADATA_FILE)


def read_metadata(export_dir: str) -> dict:
    """The export's metadata, checked to have every key verification reads, of the right type."""
    path = metadata_path(export_dir)
    if not os.path.exists(path):
        raise ValueError(f"{export_dir!r} is not a tf_lottery export ({path} is missing)")
    try:
        with open(path, "rb") as f:
            meta = json.loads(f.read().decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise corrupt(path, f"is truncated or corrupted ({type(e).__name__})", EXPORT_AGAIN) from e
    return check_metadata(path, meta)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_shape(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_int(d) and d > 0 for d in value)


def _check(path: str, ok: bool, what: str) -> None:
    if not ok:
        raise corrupt(path, f"is not tf_lottery export metadata ({what})", EXPORT_AGAIN)


def check_metadata(path: str, meta: Any) -> dict:
    """`meta` if it has the structure `export_model` writes (older exports lack `model_output`)."""
    _check(path, isinstance(meta, dict), "not a JSON object")
    _check(path, meta.get("format") in FORMATS, f"format={meta.get('format')!r}, allowed: {', '.join(FORMATS)}")
    _check(path, _is_shape(meta.get("input_shape")), f"input_shape={meta.get('input_shape')!r} is not a list of sizes")
    output = meta.setdefault("model_output", "logits")
    _check(path, output in MODEL_OUTPUTS, f"model_output={output!r}, allowed: {', '.join(MODEL_OUTPUTS)}")
    _check(path, meta.get("run_dir") is None or isinstance(meta["run_dir"], str), "run_dir is not a path")
    _check(path, meta.get("round") is None or (_is_int(meta["round"]) and meta["round"] >= 0), "round is not a round number")
    layers = meta.get("layers")
    _check(path, isinstance(layers, dict), f"layers={layers!r} is not an object")
    for name, layer in layers.items():
        _check(path, isinstance(layer, dict), f"layer {name!r} is not an object")
        _check(path, layer.get("kind") in LAYER_KINDS, f"layer {name!r} has kind={layer.get('kind')!r}")
        _check(path, layer.get("storage") in FORMATS, f"layer {name!r} has storage={layer.get('storage')!r}")
        _check(path, _is_shape(layer.get("shape")), f"layer {name!r} has shape={layer.get('shape')!r}")
        if layer["storage"] == "compact":
            _check_compact(path, name, layer)
    return meta


def _check_compact(path: str, name: str, layer: dict) -> None:
    """A compact layer's original shape and kept indices agree with its shape."""
    shape, original = layer["shape"], layer.get("original_shape")
    _check(path, _is_shape(original) and len(original) == len(shape) and original[:-2] == shape[:-2],
           f"layer {name!r} has original_shape={original!r} for shape {shape!r}")
    for key, axis in (("kept_rows", -2), ("kept_units", -1)):
        kept = layer.get(key)
        _check(path, isinstance(kept, list) and len(kept) == shape[axis] and all(_is_int(i) for i in kept)
               and kept == sorted(set(kept)) and (not kept or 0 <= kept[0] and kept[-1] < original[axis]),
               f"layer {name!r} has {key} that do not fit shape {shape!r} of {original!r}")
