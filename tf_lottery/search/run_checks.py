"""What a run's files must hold: the checks applied to every stage result, mask, weight list and
summary row read back, and the rules that pick a round. Pure Python and NumPy, no TensorFlow."""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from tf_lottery.files import corrupt

EVALUATION_KEYS = ("iteration", "train_loss", "validation_loss", "validation_accuracy", "test_loss", "test_accuracy")
STAGE_KEYS = {
    "test_accuracy": float,
    "validation_loss": float,
    "early_stop_iteration": int,
    "early_stop_test_accuracy": float,
    "early_stop_validation_loss": float,
    "iterations": int,
    "seconds": float,
    "history": list,
    "weights_remaining": float,
    "layers": dict,
}
# Keys a stage file may lack: those added after version 1 of the layout.
# schedule_start: the schedule's iteration a network rewound to k > 0 began at (from 0.3 on).
OPTIONAL_STAGE_KEYS = {"all_weights_remaining": float, "schedule_start": int}
_FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")
_SECTIONS = ("model", "data", "training", "pruning", "runtime")


def check_ours(path: str, config: Any, fingerprint: Any) -> None:
    """A record another tool wrote can pass for an empty config: tf_lottery always writes every
    section and a 16-hex-digit fingerprint."""
    missing = [s for s in _SECTIONS if not isinstance(config, dict) or not config.get(s)]
    if missing or not isinstance(fingerprint, str) or not _FINGERPRINT.match(fingerprint):
        what = f"sections {missing} missing" if missing else f"fingerprint {fingerprint!r}"
        raise corrupt(path, f"is not a tf_lottery run record ({what})", "use another directory")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_value(path: str, key: str, value: Any, kind: type, fix: str = "delete it to recompute") -> None:
    if kind is float:
        ok = _is_number(value)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise corrupt(path, f"has {key}={value!r}, expected a {kind.__name__}", fix)


def check_history(path: str, history: Any, total_iterations: Optional[int] = None) -> list[dict]:
    """A list of evaluations with exactly the evaluation keys, at increasing iterations."""
    if not isinstance(history, list):
        raise corrupt(path, "has a history that is not a list")
    previous = 0
    for entry in history:
        if not isinstance(entry, dict) or set(entry) != set(EVALUATION_KEYS):
            keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise corrupt(path, f"has a history entry with keys {keys}, expected {list(EVALUATION_KEYS)}")
        for key in EVALUATION_KEYS:
            check_value(path, f"history.{key}", entry[key], int if key == "iteration" else float)
        iteration = entry["iteration"]
        if iteration <= previous or (total_iterations is not None and iteration > total_iterations):
            raise corrupt(path, f"has a history entry at iteration {iteration} out of order or past the end")
        previous = iteration
    return history


def check_stage(path: str, result: Any, total_iterations: Optional[int] = None) -> dict:
    """A stage result with every metric key of the right type (and nothing unknown)."""
    if not isinstance(result, dict):
        raise corrupt(path, "is not a stage result (not a JSON object)")
    missing = [k for k in STAGE_KEYS if k not in result]
    unknown = [k for k in result if k not in STAGE_KEYS and k not in OPTIONAL_STAGE_KEYS]
    if missing or unknown:
        what = f"lacks {missing}" if missing else f"has unknown keys {unknown}"
        raise corrupt(path, f"is not a stage result ({what})")
    for key, kind in {**STAGE_KEYS, **OPTIONAL_STAGE_KEYS}.items():
        if key in result:
            check_value(path, key, result[key], kind)
    check_history(path, result["history"], total_iterations)
    if not result["history"]:
        raise corrupt(path, "has an empty history")
    if total_iterations is not None and result["iterations"] != total_iterations:
        raise corrupt(path, f"was trained for {result['iterations']} iterations, the config says {total_iterations}")
    if not 0 < result["weights_remaining"] <= 1:
        raise corrupt(path, f"has weights_remaining={result['weights_remaining']!r} outside (0, 1]")
    return result


def check_masks(
    path: str,
    masks: Mapping[str, np.ndarray],
    shapes: Mapping[str, tuple],
    counts: Optional[Mapping[str, int]] = None,
    total: Optional[int] = None,
) -> dict[str, np.ndarray]:
    """Masks of exactly the given layers and shapes, all values 0 or 1, with the expected survivors.

    `counts` checks each layer's survivors; `total` the survivors of all layers together
    (global pruning fixes only the pool's count).
    """
    if set(masks) != set(shapes):
        raise corrupt(path, f"does not fit this model: it holds masks for layers {sorted(masks)} but the model's prunable layers are {sorted(shapes)}")
    out = {}
    for name, shape in shapes.items():
        mask = masks[name]
        if tuple(mask.shape) != tuple(shape):
            raise corrupt(path, f"does not fit this model: layer {name!r} has kernel shape {tuple(shape)}, file has {tuple(mask.shape)}")
        if not np.issubdtype(mask.dtype, np.number) or not np.all((mask == 0) | (mask == 1)):
            raise corrupt(path, f"holds a mask for layer {name!r} with values other than 0 and 1")
        if counts is not None and int(np.count_nonzero(mask)) != counts[name]:
            raise corrupt(path, f"keeps {int(np.count_nonzero(mask))} weights of layer {name!r}, the config gives {counts[name]}")
        out[name] = mask.astype(np.float32)
    if total is not None and sum(int(np.count_nonzero(m)) for m in out.values()) != total:
        raise corrupt(path, f"keeps {sum(int(np.count_nonzero(m)) for m in out.values())} weights, the config gives {total}")
    return out


def check_weights(path: str, values: list[np.ndarray], shapes: Sequence[tuple]) -> list[np.ndarray]:
    """A weight list of the model's tensor shapes, all finite."""
    if [tuple(v.shape) for v in values] != [tuple(s) for s in shapes]:
        raise corrupt(path, "holds weights of another model (tensor shapes differ)")
    for v in values:
        if not np.issubdtype(v.dtype, np.number) or not np.all(np.isfinite(v)):
            raise corrupt(path, "holds non-numeric or non-finite weights")
    return values


def stage_row(round_index: int, main: dict, controls: Mapping[str, dict]) -> dict:
    """One summary row: the ticket's metrics (no history) and each control's."""
    row = {"round": round_index, **{k: v for k, v in main.items() if k != "history"}}
    row["controls"] = {name: {k: v for k, v in r.items() if k not in ("history", "layers")} for name, r in controls.items()}
    return row


def check_row(path: str, row: Any, fix: str) -> dict:
    if not isinstance(row, dict) or not isinstance(row.get("round"), int) or not isinstance(row.get("controls"), dict):
        raise corrupt(path, f"has a round entry that is not a tf_lottery round ({str(row)[:60]})", fix)
    for key in ("weights_remaining", "test_accuracy", "early_stop_test_accuracy"):
        check_value(path, key, row.get(key), float, fix)
    check_value(path, "early_stop_iteration", row.get("early_stop_iteration"), int, fix)
    for name, metrics in row["controls"].items():
        if not isinstance(metrics, dict):
            raise corrupt(path, f"has control {name!r} that is not an object", fix)
        for key in ("test_accuracy", "early_stop_test_accuracy"):
            check_value(path, f"{name}.{key}", metrics.get(key), float, fix)
    return row


def select_round(rows: Sequence[dict], which) -> int:
    """The round number for 'best', 'last' or a number among finished `rows`.

    'best' is the highest early-stop test accuracy; ties go to the sparser (later) round.
    """
    if not rows:
        raise ValueError("the run has no finished round yet; allowed: a run with at least one finished round")
    numbers = [int(r["round"]) for r in rows]
    text = str(which).strip().lower()
    if text == "best":
        return int(max(rows, key=lambda r: (r["early_stop_test_accuracy"], r["round"]))["round"])
    if text == "last":
        return max(numbers)
    try:
        index = int(text)
    except ValueError:
        raise ValueError(f"round {which!r} is not a round; allowed: best, last or 0..{max(numbers)}") from None
    if index not in numbers:
        raise ValueError(f"round {index} is out of range; allowed: best, last or 0..{max(numbers)} (the finished rounds)")
    return index


# Keys of an instability result (`instability/level_RR_k_KKKKK/path.json`, tf_lottery.analysis.instability).
INSTABILITY_KEYS = {
    "level": int,
    "rewind_step": int,
    "weights_remaining": float,
    "iterations": int,
    "seeds": list,
    "same_data_order": bool,
    "alphas": list,
    "errors": list,
    "barrier": float,
    "endpoint_errors": list,
}


# Present only where the copies train other than the run's own mask (`--mask_per_k`, a control).
INSTABILITY_OPTIONAL_KEYS = {"mask_rewind_step": int, "control": str}


def error_barrier(errors: Sequence[float]) -> float:
    """The paper's instability: max error along the path minus the mean of the endpoints' errors.

    Defined here, beside the check of recorded results, so that the run directory (and the report,
    which reads it) need not import the analysis; `tf_lottery.analysis.linear_path` re-exports it.

    The max runs over all points, endpoints included, so the result is >= 0; identical errors
    everywhere give exactly 0.

    Args:
        errors: errors at increasing alpha, errors[0] at network a and errors[-1] at network b.

    Returns:
        max(errors) - (errors[0] + errors[-1]) / 2.

    Raises:
        ValueError: fewer than two errors, or a NaN among them.
    """
    values = np.asarray(errors, np.float64)
    if values.ndim != 1 or values.size < 2:
        raise ValueError(f"need the errors at two or more points of the path, got {values.size}")
    if np.any(np.isnan(values)):
        raise ValueError("errors along the path contain NaN")
    return float(values.max() - (values[0] + values[-1]) / 2.0)


def instability_variant(result: dict) -> str:
    """The folder suffix an instability result belongs under: "", "mask_k", a control, or "mask_k_" + control."""
    parts = (["mask_k"] if "mask_rewind_step" in result else []) + ([result["control"]] if result.get("control") else [])
    return "_".join(parts)


def check_instability(path: str, result: Any, level: Optional[int] = None, rewind_step: Optional[int] = None,
                      variant: Optional[str] = None) -> dict:
    """An instability result: the test errors at two or more alphas from 0 to 1, and their barrier.

    The barrier must be the errors' own (`error_barrier`); `level`, `rewind_step` and
    `variant`, when given, must be the ones its folder names.
    """
    optional = set(result) & set(INSTABILITY_OPTIONAL_KEYS) if isinstance(result, dict) else set()
    if not isinstance(result, dict) or set(result) - optional != set(INSTABILITY_KEYS):
        keys = sorted(result) if isinstance(result, dict) else type(result).__name__
        raise corrupt(path, f"is not an instability result (keys {keys}, expected {sorted(INSTABILITY_KEYS)})")
    for key, kind in INSTABILITY_KEYS.items():
        check_value(path, key, result[key], kind)
    for key in optional:
        check_value(path, key, result[key], INSTABILITY_OPTIONAL_KEYS[key])
    if "mask_rewind_step" in result and result["mask_rewind_step"] != result["rewind_step"]:
        raise corrupt(path, f"has mask_rewind_step {result['mask_rewind_step']}, but its copies start at "
                      f"rewind_step {result['rewind_step']}")
    alphas, errors = result["alphas"], result["errors"]
    for key, values, length in (("alphas", alphas, None), ("errors", errors, len(alphas)),
                                ("endpoint_errors", result["endpoint_errors"], 2), ("seeds", result["seeds"], 2)):
        kind = int if key == "seeds" else float
        for value in values:
            check_value(path, key, value, kind)
        if length is not None and len(values) != length:
            raise corrupt(path, f"has {len(values)} {key}, expected {length}")
    if len(alphas) < 2 or alphas[0] != 0.0 or alphas[-1] != 1.0 or any(b <= a for a, b in zip(alphas, alphas[1:])):
        raise corrupt(path, "has alphas that do not rise from 0 to 1 in two or more points")
    if any(not 0.0 <= e <= 1.0 for e in errors + result["endpoint_errors"]):
        raise corrupt(path, "has an error outside [0, 1]")
    if abs(result["barrier"] - error_barrier(errors)) > 1e-9:
        raise corrupt(path, f"has barrier {result['barrier']!r}, but its errors give {error_barrier(errors)!r}")
    if not 0 < result["weights_remaining"] <= 1 or result["level"] < 0 or result["rewind_step"] < 0 or result["iterations"] < 1:
        raise corrupt(path, "has a level, rewind_step, iterations or weights_remaining out of range")
    for key, wanted in (("level", level), ("rewind_step", rewind_step)):
        if wanted is not None and result[key] != wanted:
            raise corrupt(path, f"says {key} {result[key]}, but its folder is for {key} {wanted}")
    if variant is not None and instability_variant(result) != variant:
        raise corrupt(path, f"holds the copies of {instability_variant(result) or 'the run mask'}, but its folder "
                      f"is for {variant or 'the run mask'}")
    return result
