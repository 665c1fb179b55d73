"""Importance scores for pruning at initialization: SNIP, GraSP, SynFlow, magnitude and random.

Every scorer takes a tf-keras model wrapped by `tf_lottery.masking.pruning.wrap` (masks live in its
wrappers and pruned weights are 0) and returns `{layer name: float64 array shaped like the
kernel}` where a higher score means "keep first". Only the kernels of the wrapped Dense and
Conv layers are scored, exactly the tensors that carry masks: biases, normalization
parameters and unwrapped layers are never scored or pruned (as in the reference codes, whose
default prunes only Linear/Conv weights). Scores at already-pruned positions are whatever the
formula gives (usually 0); the selection functions ignore them.

Turn scores into masks with `tf_lottery.masking.masks.global_masks` / `layerwise_masks`, which rank by
|score| (fine for the non-negative scores of SNIP, SynFlow, magnitude and random) or, with
`signed=True`, by the score itself (needed for GraSP).

The model runs in inference mode (`training=False`): dropout is off, BatchNorm uses its
moving statistics, and neither TF-MOT's step counter nor the moving statistics change. This
is the Synaptic-Flow code's default (`model.eval()` unless `--prune-train-mode`); the GraSP
authors' code scores in training mode, which differs only for networks with BatchNorm. The
scorers assume the model outputs logits (as the tf_lottery zoo does) and that `loss_fn`
takes logits, e.g. `keras.losses.SparseCategoricalCrossentropy(from_logits=True)`.

The scorers leave the model's weights and masks as they found them, bit for bit.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
import tf_keras as keras

from tf_lottery.masking import masks as mask_math
from tf_lottery.masking import pruning

Scores = dict[str, np.ndarray]
Batch = tuple  # (inputs, targets)
LossFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
SelectFn = Callable[[Mapping[str, np.ndarray], Mapping[str, np.ndarray], float], dict]


def snip_scores(model: keras.Model, batches: Iterable[Batch], loss_fn: LossFn) -> Scores:
    """SNIP's connection sensitivity |dL/dw * w| (Lee, Ajanthan & Torr, ICLR 2019).

    SNIP scores connection j by |dL/dc_j| at c = 1, where the network computes with c * w;
    that derivative is (dL/dw_j) * w_j. Here g is the gradient of the summed batch losses,
    sum_b dL_b/dw (each L_b as `loss_fn` reduces it, usually a batch mean), and the score is
    |g * w|. With one batch this is SNIP; with several equal-sized batches it ranks as SNIP on
    their concatenation (the Synaptic-Flow code accumulates gradients the same way). SNIP's
    normalization by the sum of all scores is left out: it does not change the ranking.
    Gradients are taken with respect to the masked kernels, so pruned weights score 0.

    Args:
        model: a model wrapped by `pruning.wrap`.
        batches: (inputs, targets) pairs, e.g. a list or a batched tf.data.Dataset.
        loss_fn: `loss_fn(targets, logits) -> scalar`.

    Returns:
        {layer name: float64 score array shaped like the kernel}, all >= 0.

    Raises:
        ValueError: the model has no wrapped layer, `batches` is empty, or a kernel gets no
            gradient.
    """
    wrappers = _wrappers(model)
    kernels = _kernels(wrappers)
    gradient = _summed_gradient(model, wrappers, kernels, batches, loss_fn, temperature=1.0)
    return {
        w.name: np.abs(g * k.numpy().astype(np.float64))
        for w, k, g in zip(wrappers, kernels, gradient)
    }


def grasp_scores(
    model: keras.Model, batches: Iterable[Batch], loss_fn: LossFn, temperature: float = 200.0
) -> Scores:
    """GraSP's keep-score w * (H g) (Wang, Zhang & Grosse, ICLR 2020), higher = keep.

    GraSP scores S(-w) = -w * (H g), where g is the loss gradient and H the Hessian of the
    loss with respect to the weights, and removes the weights with the HIGHEST S (they
    preserve gradient flow least). This returns -S = w * (H g), so that higher means keep;
    rank it by its sign (`masks.global_masks(..., signed=True)`), not by |score|.

    As the authors' code (pruner/GraSP.py) does: logits are divided by `temperature` (T = 200)
    before the loss; g = sum_b dL_b/dw is computed first and held constant (no graph); then
    H g = sum_b d/dw (g . dL_b/dw) in a second pass over the same batches. The authors' code
    splits one class-balanced sample (10 images per class for CIFAR-10) into two halves; pass
    the data as such batches to match it. Where weights are already pruned, both g and H g are
    restricted to the surviving weights (the subnetwork's own gradient and Hessian). Left out:
    the division of all scores by |sum of scores| (a positive constant, so the ranking is
    unchanged) and the code's re-initialization of Linear layers before scoring (this scores
    the model's own weights).

    Args:
        model: a model wrapped by `pruning.wrap`, outputting logits.
        batches: (inputs, targets) pairs; read twice, so a generator is materialized first.
        loss_fn: `loss_fn(targets, logits) -> scalar`, taking logits.
        temperature: logits are divided by this before the loss.

    Returns:
        {layer name: float64 score array shaped like the kernel}; signed.

    Raises:
        ValueError: the model has no wrapped layer, `batches` is empty, a kernel gets no
            gradient, or `temperature` is not positive.
    """
    if not temperature > 0:
        raise ValueError(f"temperature {temperature!r} must be positive")
    wrappers = _wrappers(model)
    kernels = _kernels(wrappers)
    masks = [tf.cast(w.mask, k.dtype) for w, k in zip(wrappers, kernels)]
    batches = list(batches)
    gradient = _summed_gradient(model, wrappers, kernels, batches, loss_fn, temperature)
    # Constants of the second pass: the first pass's gradient, restricted to the survivors.
    held = [tf.constant(g, k.dtype) * m for g, k, m in zip(gradient, kernels, masks)]
    hessian_gradient = [np.zeros(k.shape, np.float64) for k in kernels]
    for inputs, targets in batches:
        with tf.GradientTape() as outer:
            outer.watch(kernels)
            with tf.GradientTape() as inner:
                inner.watch(kernels)
                loss = loss_fn(targets, model(inputs, training=False) / temperature)
            grads = _checked(inner.gradient(loss, kernels), wrappers)
            dot = tf.add_n([tf.reduce_sum(h * m * g) for h, m, g in zip(held, masks, grads)])
        # A kernel the first-order gradients do not depend on has H g = 0 there, not "no gradient".
        products = outer.gradient(dot, kernels, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        for total, product, mask in zip(hessian_gradient, products, masks):
            total += (product * mask).numpy().astype(np.float64)
    return {
        w.name: k.numpy().astype(np.float64) * hg
        for w, k, hg in zip(wrappers, kernels, hessian_gradient)
    }


def synflow_scores(model: keras.Model, input_shape: Optional[Sequence[int]] = None) -> Scores:
    """One pass of SynFlow's synaptic saliency |dR/dw * w| (Tanaka, Kunin, Yamins & Ganguli, NeurIPS 2020).

    Every parameter and statistic of the model is replaced by its absolute value (the
    Synaptic-Flow code's `linearize`: kernels, biases, BatchNorm scales, offsets and moving
    statistics alike; BatchNorm in inference mode), the network gets one input of all ones,
    R = 1^T f(1; |theta|) is the sum of its outputs, and the score is |dR/dw * w| at the
    absolute weights. No data is used. The original values, signs included, are restored
    exactly afterwards (from a copy, not by multiplying signs back). For a bias-free ReLU
    network every layer's scores sum to R (the conservation law of the paper's Theorem 2).

    Args:
        model: a model wrapped by `pruning.wrap`, outputting logits (a softmax output would
            not be linear in the positive inputs).
        input_shape: shape of one example; defaults to the model's input shape without the
            batch axis.

    Returns:
        {layer name: float64 score array shaped like the kernel}, all >= 0.

    Raises:
        ValueError: the model has no wrapped layer, its input shape is unknown, a kernel gets
            no gradient, or R overflows float32 (a very deep network: scores would be inf).
    """
    wrappers = _wrappers(model)
    kernels = _kernels(wrappers)
    shape = _example_shape(model, input_shape)
    variables = pruning.model_variables(model)
    saved = [v.numpy().copy() for v in variables]
    try:
        for variable, value in zip(variables, saved):
            variable.assign(np.abs(value))
        ones = tf.ones((1,) + shape, model.inputs[0].dtype if model.inputs else tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(kernels)
            total = tf.reduce_sum(model(ones, training=False))
        grads = _checked(tape.gradient(total, kernels), wrappers)
        if not np.isfinite(total.numpy()):
            raise ValueError(
                f"SynFlow's R = sum of outputs is {total.numpy()} for model {model.name!r}: "
                "the product of absolute weights overflows float32"
            )
        scores = {
            w.name: np.abs(g.numpy().astype(np.float64) * k.numpy().astype(np.float64))
            for w, k, g in zip(wrappers, kernels, grads)
        }
    finally:
        for variable, value in zip(variables, saved):
            variable.assign(value)
    return scores


def synflow_masks(
    model: keras.Model,
    masks: Mapping[str, np.ndarray],
    keep_fraction: float,
    iterations: int = 100,
    select: SelectFn = mask_math.global_masks,
    input_shape: Optional[Sequence[int]] = None,
) -> dict[str, np.ndarray]:
    """Iterative SynFlow (Tanaka et al. 2020, Algorithm 1): re-score and prune `iterations` times.

    Step k = 1..iterations applies the current masks, scores with `synflow_scores` and keeps
    keep_fraction**(k / iterations) of the weights (the paper's exponential schedule; the last
    step lands on `keep_fraction` exactly). Counts are against the full size, as
    `masks.keep_count` does, and the selection is global over the pooled layers by default, as
    in the paper (100 iterations is its default too).

    Args:
        model: a model wrapped by `pruning.wrap`; its weights and masks are restored afterwards.
        masks: {layer name: float32 0/1 mask} to start from (the dense masks at initialization).
        keep_fraction: fraction in (0, 1] of all masked weights to keep at the end.
        iterations: number of score-and-prune steps, at least 1.
        select: `select(scores, masks, keep_fraction) -> masks`, e.g. `masks.global_masks`
            (the default), or the same with `signed=True`.
        input_shape: shape of one example; defaults to the model's.

    Returns:
        {layer name: float32 0/1 mask}, each a subset of `masks`.

    Raises:
        ValueError: `iterations` is below 1, `keep_fraction` is outside (0, 1], or the masks
            do not match the model's layers.
    """
    if not (isinstance(iterations, (int, np.integer)) and iterations >= 1):
        raise ValueError(f"iterations {iterations!r} must be an integer of 1 or more")
    mask_math.keep_count(1, keep_fraction)  # validates the fraction before any work
    state = [v.numpy().copy() for v in model.weights]  # masks and TF-MOT bookkeeping too
    current = {name: np.asarray(mask, np.float32).copy() for name, mask in masks.items()}
    try:
        for step in range(1, iterations + 1):
            pruning.set_masks(model, current)
            scores = synflow_scores(model, input_shape)
            current = select(scores, current, keep_fraction ** (step / iterations))
    finally:
        for variable, value in zip(model.weights, state):
            variable.assign(value)
    return current


def magnitude_scores(model: keras.Model) -> Scores:
    """|w| of each kernel: magnitude pruning at initialization (a baseline of Frankle et al., ICLR 2021).

    Args:
        model: a model wrapped by `pruning.wrap`.

    Returns:
        {layer name: float64 |kernel|}.

    Raises:
        ValueError: the model has no wrapped layer.
    """
    wrappers = _wrappers(model)
    return {
        w.name: np.abs(k.numpy().astype(np.float64))
        for w, k in zip(wrappers, _kernels(wrappers))
    }


def random_scores(masks: Mapping[str, np.ndarray], seed: int) -> Scores:
    """Independent uniform [0, 1) scores: random pruning (a baseline of Frankle et al., ICLR 2021).

    Selected globally, they prune a uniformly random subset of the pooled survivors, so each
    layer ends near the same density; selected layerwise, each layer gets a random subset of
    its own count. Layers draw in sorted-name order, so the scores depend only on the seed
    and the masks' names and shapes, not on the dict's order.

    Args:
        masks: {layer name: mask}; only names and shapes are read.
        seed: seed of the NumPy generator.

    Returns:
        {layer name: float64 score array shaped like the mask}, in `masks`' order.
    """
    rng = np.random.default_rng(seed)
    drawn = {name: rng.random(np.shape(masks[name])) for name in sorted(masks)}
    return {name: drawn[name] for name in masks}


def _wrappers(model: keras.Model) -> list:
    """The model's masked weights (`pruning.Prunable`: name, kernel, mask), in model order."""
    wrappers = pruning.prunables(model)
    if not wrappers:
        raise ValueError(
            f"model {getattr(model, 'name', model)!r} has no pruning wrappers; "
            "wrap it with tf_lottery.masking.pruning.wrap first"
        )
    return wrappers


def _kernels(wrappers: list) -> list:
    return [w.kernel for w in wrappers]


def _summed_gradient(model, wrappers, kernels, batches, loss_fn, temperature) -> list[np.ndarray]:
    """sum_b dL_b/dw over the batches, as float64 arrays; logits divided by `temperature`."""
    total = [np.zeros(k.shape, np.float64) for k in kernels]
    count = 0
    for inputs, targets in batches:
        with tf.GradientTape() as tape:
            tape.watch(kernels)
            loss = loss_fn(targets, model(inputs, training=False) / temperature)
        for acc, grad in zip(total, _checked(tape.gradient(loss, kernels), wrappers)):
            acc += grad.numpy().astype(np.float64)
        count += 1
    if count == 0:
        raise ValueError("no batches to score with; pass at least one (inputs, targets) batch")
    return total


def _checked(grads: list, wrappers: list) -> list:
    missing = [w.name for w, g in zip(wrappers, grads) if g is None]
    if missing:
        raise ValueError(f"layers {missing} get no gradient: they do not reach the model's output")
    return grads


def _example_shape(model: keras.Model, input_shape: Optional[Sequence[int]]) -> tuple[int, ...]:
    if input_shape is None:
        if len(model.inputs or []) != 1:
            raise ValueError(f"model {model.name!r} has {len(model.inputs or [])} inputs; pass input_shape")
        input_shape = tuple(model.inputs[0].shape[1:])
    shape = tuple(input_shape)
    if any(d is None for d in shape):
        raise ValueError(f"input shape {shape} has an unknown dimension; pass input_shape")
    return tuple(int(d) for d in shape)
