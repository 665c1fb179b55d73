"""Instability analysis: the error barrier on the straight line between two trained networks.

Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity and the Lottery Ticket
Hypothesis" (ICML 2020): copy the network at iteration k, train the two copies with different
data orders (same mask), and evaluate the error E at weights (1 - alpha) W_a + alpha W_b for
30 evenly spaced alpha in [0, 1]. The instability is the error barrier height

    sup_alpha E((1 - alpha) W_a + alpha W_b)  -  (E(W_a) + E(W_b)) / 2,

the sup taken over the whole path, endpoints included, as in the paper's definition. It is
therefore never negative; it is 0 when no point is worse than the endpoints' mean, which
needs equal endpoint errors. (A path that falls or rises monotonically from one endpoint to
the other has barrier |E(W_a) - E(W_b)| / 2.) The paper calls two networks linearly connected
when the barrier is within noise (it uses 2%).

Every array of the weight lists is interpolated: kernels, biases, and BatchNorm's scale,
offset and moving statistics alike. The paper interpolates the networks' full state and does
not re-estimate BatchNorm statistics along the path, and neither does this module. Two
masked networks with the same mask interpolate to a network with the same zeros.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import numpy as np

from tf_lottery.search.run_checks import error_barrier  # noqa: F401  (re-exported: the path's barrier)


@dataclasses.dataclass(frozen=True)
class PathResult:
    """Errors along the linear path and its barrier.

    Attributes:
        alphas: interpolation coefficients, 0 (network a) to 1 (network b).
        errors: the error at each alpha.
        barrier: max(errors) - (errors[0] + errors[-1]) / 2, the instability.
    """

    alphas: tuple[float, ...]
    errors: tuple[float, ...]
    barrier: float

    def to_dict(self) -> dict[str, Any]:
        """Plain floats and lists, ready for JSON."""
        return {
            "alphas": [float(a) for a in self.alphas],
            "errors": [float(e) for e in self.errors],
            "barrier": float(self.barrier),
        }


def interpolate(
    weights_a: Sequence[np.ndarray], weights_b: Sequence[np.ndarray], alpha: float
) -> list[np.ndarray]:
    """(1 - alpha) * a + alpha * b for each pair of arrays, in each array's own dtype.

    Exact where it matters: alpha 0 and 1 return copies of a and b, and every entry on which a
    and b agree (identical networks, weights pruned in both) keeps that value exactly. Elsewhere
    the mix is computed in float64 and rounded once to the arrays' dtype.

    Args:
        weights_a: the weights at alpha = 0, a list of arrays (e.g. `pruning.snapshot`).
        weights_b: the weights at alpha = 1, the same shapes and dtypes.
        alpha: a number in [0, 1].

    Returns:
        A new list of new arrays.

    Raises:
        ValueError: the lists differ in length, shape or dtype, alpha is outside [0, 1], or
            a non-float array (a counter) differs between a and b.
    """
    if len(weights_a) != len(weights_b):
        raise ValueError(f"weights_a has {len(weights_a)} arrays but weights_b has {len(weights_b)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha {alpha!r} is outside [0, 1]")
    pairs = [(np.asarray(a), np.asarray(b)) for a, b in zip(weights_a, weights_b)]
    for i, (a, b) in enumerate(pairs):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError(
                f"array {i} is {a.dtype}{list(a.shape)} in weights_a but {b.dtype}{list(b.shape)} in weights_b"
            )
    if alpha == 0.0:
        return [a.copy() for a, _ in pairs]
    if alpha == 1.0:
        return [b.copy() for _, b in pairs]
    result = []
    for i, (a, b) in enumerate(pairs):
        if not np.issubdtype(a.dtype, np.floating):
            if not np.array_equal(a, b):
                raise ValueError(f"array {i} has dtype {a.dtype} and differs between a and b; cannot interpolate it")
            result.append(a.copy())
            continue
        mix = ((1.0 - alpha) * a.astype(np.float64) + alpha * b.astype(np.float64)).astype(a.dtype)
        result.append(np.where(a == b, a, mix))
    return result


def evaluate_path(
    model: Any,
    weights_a: Sequence[np.ndarray],
    weights_b: Sequence[np.ndarray],
    evaluate_fn: Callable[[Any], float],
    points: int = 30,
    restore: Optional[Callable[[Any, list[np.ndarray]], None]] = None,
) -> PathResult:
    """Evaluate the error at `points` evenly spaced alphas from a (0) to b (1).

    Each point's weights are written with `restore(model, weights)`; the default,
    `tf_lottery.masking.pruning.restore`, re-applies the model's masks, so pruned weights stay 0 even
    if the endpoints were not exactly 0 there. The model is left holding weights_b.

    Args:
        model: the network to evaluate, e.g. a wrapped tf-keras model.
        weights_a: weights of the first trained copy (`pruning.snapshot` order).
        weights_b: weights of the second copy, same structure.
        evaluate_fn: `evaluate_fn(model) -> error`, e.g. test error as a fraction.
        points: number of alphas, at least 2; the paper uses 30.
        restore: `restore(model, weights)`; defaults to `tf_lottery.masking.pruning.restore`.

    Returns:
        PathResult with the alphas, the errors and the barrier.

    Raises:
        ValueError: `points` is below 2, or the weight lists do not match (see `interpolate`).
    """
    if not (isinstance(points, (int, np.integer)) and points >= 2):
        raise ValueError(f"points {points!r} must be an integer of 2 or more")
    if restore is None:
        from tf_lottery.masking import pruning  # TF-MOT: the path math itself is NumPy only

        restore = pruning.restore
    alphas = np.linspace(0.0, 1.0, int(points))
    errors = []
    for alpha in alphas:
        restore(model, interpolate(weights_a, weights_b, float(alpha)))
        errors.append(float(evaluate_fn(model)))
    return PathResult(tuple(float(a) for a in alphas), tuple(errors), error_barrier(errors))
