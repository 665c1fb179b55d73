"""Pruning-at-initialization scores (tf_lottery.masking.scoring) on tiny networks with hand-computed answers."""

import functools

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tf_lottery.masking import masks as M
from tf_lottery.masking import pruning, scoring

f32 = np.float32


def wrapped(layers, input_shape, kernels=None, biases=None):
    """A wrapped Sequential model whose kernels (and biases) are set to the given values."""
    model = pruning.wrap(keras.Sequential([keras.Input(input_shape)] + layers))
    for wrapper in pruning.prunable_layers(model):
        name = pruning.layer_name(wrapper)
        if kernels is not None:
            wrapper.pruning_vars[0][0].assign(np.asarray(kernels[name], f32))
        if biases is not None and name in biases:
            wrapper.layer.bias.assign(np.asarray(biases[name], f32))
    return model


def state(model):
    return [v.numpy().copy() for v in model.weights]


def assert_state_equal(model, before):
    after = state(model)
    assert len(after) == len(before)
    for a, b in zip(after, before):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


# -- SNIP -----------------------------------------------------------------------------------

X = np.array([[1.0, 2.0], [0.0, 1.0]], f32)
Y = np.array([[1.0, 0.0], [0.0, 1.0]], f32)
W = np.array([[0.5, -1.0], [2.0, 0.25]], f32)


def snip_model():
    return wrapped([keras.layers.Dense(2, use_bias=False, name="fc")], (2,), kernels={"fc": W})


def test_snip_on_a_2x2_dense_layer_with_mse_by_hand():
    # pred = X W = [[4.5, -0.5], [2, 0.25]]; MSE averages 4 terms, so dL/dpred = 2 (pred - Y) / 4
    #   = [[1.75, -0.25], [1, -0.375]];  dL/dW = X^T dL/dpred = [[1.75, -0.25], [4.5, -0.875]];
    # |dL/dW * W| = [[0.875, 0.25], [9, 0.21875]].
    scores = scoring.snip_scores(snip_model(), [(X, Y)], keras.losses.MeanSquaredError())
    assert list(scores) == ["fc"]
    assert scores["fc"].dtype == np.float64
    np.testing.assert_array_equal(scores["fc"], [[0.875, 0.25], [9.0, 0.21875]])


def test_snip_sums_the_gradient_over_batches_before_taking_the_magnitude():
    # Batch 2 has the opposite residual sign on one row: g = g1 + g2, then |g * w|.
    x2, y2 = X[:1], np.array([[5.5, -0.5]], f32)  # pred [4.5, -0.5]: residual [-1, 0]
    # Its gradient: dL/dpred = 2 * [-1, 0] / 2 = [-1, 0]; dL/dW = [[-1, 0], [-2, 0]].
    g = np.array([[1.75 - 1.0, -0.25], [4.5 - 2.0, -0.875]])
    scores = scoring.snip_scores(snip_model(), [(X, Y), (x2, y2)], keras.losses.MeanSquaredError())
    np.testing.assert_allclose(scores["fc"], np.abs(g * W), rtol=1e-6)


def test_snip_with_cross_entropy_matches_the_softmax_gradient():
    labels = np.array([1, 0])
    logits = X.astype(np.float64) @ W
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad = X.T.astype(np.float64) @ ((p - np.eye(2)[labels]) / len(labels))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    scores = scoring.snip_scores(snip_model(), [(X, labels)], loss)
    np.testing.assert_allclose(scores["fc"], np.abs(grad * W), rtol=1e-5)


def test_snip_scores_pruned_weights_0_and_leaves_the_model_untouched():
    model = snip_model()
    pruning.set_masks(model, {"fc": np.array([[1, 0], [1, 1]], f32)})
    before = state(model)
    scores = scoring.snip_scores(model, [(X, Y)], keras.losses.MeanSquaredError())
    assert scores["fc"][0, 1] == 0.0
    assert scores["fc"][1, 0] == 9.0
    assert_state_equal(model, before)


# -- GraSP ----------------------------------------------------------------------------------

GRASP_X = np.array([[0.5, -1.0], [1.5, 0.2], [-0.3, 0.8], [1.0, 1.0]], f32)
GRASP_Y = np.array([0, 1, 1, 0])
GRASP_KERNELS = {
    "hidden": np.array([[0.7, -0.4, 0.2], [0.1, 0.9, -0.6]], f32),
    "out": np.array([[0.5, -0.8], [-0.3, 0.6], [1.1, 0.4]], f32),
}
GRASP_BIASES = {"hidden": np.array([0.1, -0.2, 0.05], f32), "out": np.array([0.02, -0.03], f32)}


def grasp_model():
    layers = [
        keras.layers.Dense(3, activation="tanh", name="hidden"),
        keras.layers.Dense(2, name="out"),
    ]
    return wrapped(layers, (2,), GRASP_KERNELS, GRASP_BIASES)


def numpy_loss(theta, batches, temperature):
    """Summed mean cross-entropy of the tiny tanh net at flat kernels theta, in float64."""
    w1 = theta[:6].reshape(2, 3)
    w2 = theta[6:].reshape(3, 2)
    total = 0.0
    for x, y in batches:
        h = np.tanh(x.astype(np.float64) @ w1 + GRASP_BIASES["hidden"])
        z = (h @ w2 + GRASP_BIASES["out"]) / temperature
        z = z - z.max(1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
        total += -log_p[np.arange(len(y)), y].mean()
    return total


def finite_difference_hg(theta, free, batches, temperature):
    """H g over the free coordinates by central differences of central differences (float64)."""

    def gradient(point):
        g = np.zeros_like(point)
        for i in free:
            step = np.zeros_like(point)
            step[i] = 1e-5
            g[i] = (numpy_loss(point + step, batches, temperature) - numpy_loss(point - step, batches, temperature)) / 2e-5
        return g

    g = gradient(theta)
    eps = 1e-3 / np.linalg.norm(g)
    return (gradient(theta + eps * g) - gradient(theta - eps * g)) / (2 * eps)


def flat_kernels(masks=None):
    theta = np.concatenate([GRASP_KERNELS["hidden"].reshape(-1), GRASP_KERNELS["out"].reshape(-1)]).astype(np.float64)
    if masks is not None:
        theta *= np.concatenate([masks["hidden"].reshape(-1), masks["out"].reshape(-1)])
    return theta


@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_grasp_equals_w_times_a_finite_difference_hessian_gradient_product(temperature):
    batches = [(GRASP_X[:2], GRASP_Y[:2]), (GRASP_X[2:], GRASP_Y[2:])]
    model = grasp_model()
    before = state(model)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    scores = scoring.grasp_scores(model, batches, loss, temperature=temperature)
    theta = flat_kernels()
    expected = theta * finite_difference_hg(theta, range(theta.size), batches, temperature)
    got = np.concatenate([scores["hidden"].reshape(-1), scores["out"].reshape(-1)])
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())
    assert np.any(got < 0) and np.any(got > 0)  # signed: this case needs signed selection
    assert_state_equal(model, before)


def test_grasp_on_a_masked_network_uses_the_subnetworks_gradient_and_hessian():
    masks = {
        "hidden": np.array([[1, 0, 1], [1, 1, 0]], f32),
        "out": np.array([[1, 1], [0, 1], [1, 0]], f32),
    }
    model = grasp_model()
    pruning.set_masks(model, masks)
    batches = [(GRASP_X, GRASP_Y)]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    scores = scoring.grasp_scores(model, batches, loss, temperature=1.0)
    theta = flat_kernels(masks)
    free = np.flatnonzero(np.concatenate([masks["hidden"].reshape(-1), masks["out"].reshape(-1)]))
    expected = theta * finite_difference_hg(theta, free, batches, 1.0)
    got = np.concatenate([scores["hidden"].reshape(-1), scores["out"].reshape(-1)])
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())
    assert np.all(got[np.setdiff1d(np.arange(got.size), free)] == 0.0)


def test_grasp_is_0_where_the_loss_is_linear_in_the_weights():
    # L = -sum(X W): g = -X^T 1 is constant, so H = 0 and no second-order path exists.
    scores = scoring.grasp_scores(snip_model(), [(X, Y)], lambda y, p: -tf.reduce_sum(p), temperature=1.0)
    np.testing.assert_array_equal(scores["fc"], np.zeros((2, 2)))


def test_grasp_rejects_a_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        scoring.grasp_scores(grasp_model(), [(GRASP_X, GRASP_Y)], keras.losses.MeanSquaredError(), 0.0)


# -- SynFlow --------------------------------------------------------------------------------


def test_synflow_by_hand_on_a_2_2_1_relu_network():
    # |W1| = [[1, 2], [3, 4]], |W2| = [[1], [2]], input [1, 1]: hidden = [4, 6], R = 4 + 12 = 16.
    # dR/dW2 = hidden -> scores [4, 12]; dR/dW1[i, j] = |W2|[j] -> scores [[1, 4], [3, 8]].
    kernels = {"h": [[1.0, -2.0], [3.0, 4.0]], "o": [[-1.0], [2.0]]}
    layers = [
        keras.layers.Dense(2, activation="relu", use_bias=False, name="h"),
        keras.layers.Dense(1, use_bias=False, name="o"),
    ]
    model = wrapped(layers, (2,), kernels)
    before = state(model)
    scores = scoring.synflow_scores(model)
    np.testing.assert_array_equal(scores["h"], [[1.0, 4.0], [3.0, 8.0]])
    np.testing.assert_array_equal(scores["o"], [[4.0], [12.0]])
    assert_state_equal(model, before)  # signs restored exactly


def relu_mlp(widths=(6, 5, 4, 3), seed=0, use_bias=False):
    layers = [
        keras.layers.Dense(w, activation="relu", use_bias=use_bias, name=f"fc{i}",
                           kernel_initializer=keras.initializers.GlorotNormal(seed + i),
                           bias_initializer=keras.initializers.RandomNormal(seed=seed + 10 + i))
        for i, w in enumerate(widths[1:-1])
    ]
    layers.append(keras.layers.Dense(widths[-1], use_bias=use_bias, name="out",
                                     kernel_initializer=keras.initializers.GlorotNormal(seed + 9)))
    return wrapped(layers, (widths[0],))


def test_synflow_conserves_the_summed_score_across_the_layers_of_a_bias_free_relu_mlp():
    model = relu_mlp()
    scores = scoring.synflow_scores(model)
    absolute = [np.abs(k.astype(np.float64)) for k in pruning.get_kernels(model).values()]
    r = np.ones((1, 6))
    for k in absolute:
        r = r @ k
    r = r.sum()
    sums = [s.sum() for s in scores.values()]
    np.testing.assert_allclose(sums, [r] * len(sums), rtol=1e-5)


def test_synflow_leaves_weights_biases_and_masks_bit_identical():
    model = relu_mlp(use_bias=True)
    masks = {n: (np.random.default_rng(1).random(m.shape) > 0.3).astype(f32) for n, m in pruning.get_masks(model).items()}
    pruning.set_masks(model, masks)
    before = state(model)
    scores = scoring.synflow_scores(model)
    assert all(np.all(scores[n][masks[n] == 0] == 0.0) for n in masks)
    assert all(np.all(s >= 0) for s in scores.values())
    assert_state_equal(model, before)


def test_synflow_masks_follows_the_exponential_schedule_and_restores_the_model():
    model = relu_mlp()
    dense = pruning.get_masks(model)
    before = state(model)
    fractions = []

    def recording_select(scores, masks, keep_fraction):
        fractions.append(keep_fraction)
        return M.global_masks(scores, masks, keep_fraction)

    out = scoring.synflow_masks(model, dense, 0.2, iterations=4, select=recording_select)
    assert fractions == [0.2 ** (k / 4) for k in range(1, 5)]
    assert fractions[-1] == 0.2
    total = sum(m.size for m in dense.values())
    assert sum(int(m.sum()) for m in out.values()) == M.keep_count(total, 0.2)
    assert M.is_subset(out, dense)
    assert_state_equal(model, before)


def test_synflow_masks_with_one_iteration_is_one_shot_synflow():
    model = relu_mlp()
    dense = pruning.get_masks(model)
    one_shot = M.global_masks(scoring.synflow_scores(model), dense, 0.3)
    out = scoring.synflow_masks(model, dense, 0.3, iterations=1)
    for name in dense:
        np.testing.assert_array_equal(out[name], one_shot[name])


def test_synflow_masks_rescores_the_pruned_network_each_step():
    model = relu_mlp()
    dense = pruning.get_masks(model)
    seen = []

    def recording_select(scores, masks, keep_fraction):
        seen.append(scores)
        return M.global_masks(scores, masks, keep_fraction)

    scoring.synflow_masks(model, dense, 0.25, iterations=2, select=recording_select)
    # Step 2's scores are those of the network pruned by step 1.
    pruning.set_masks(model, M.global_masks(seen[0], dense, 0.25 ** 0.5))
    expected = scoring.synflow_scores(model)
    for name in dense:
        np.testing.assert_allclose(seen[1][name], expected[name], rtol=1e-6)


def test_synflow_masks_starts_from_the_given_masks_and_accepts_signed_selection():
    model = relu_mlp()
    start = {n: (np.random.default_rng(2).random(m.shape) > 0.5).astype(f32) for n, m in pruning.get_masks(model).items()}
    out = scoring.synflow_masks(model, start, 0.2, iterations=3, select=functools.partial(M.global_masks, signed=True))
    assert M.is_subset(out, start)


@pytest.mark.parametrize("iterations", [0, -1, 2.5])
def test_synflow_masks_rejects_bad_iteration_counts(iterations):
    model = relu_mlp()
    with pytest.raises(ValueError, match="iterations"):
        scoring.synflow_masks(model, pruning.get_masks(model), 0.5, iterations=iterations)


def test_scorers_leave_a_conv_batchnorm_model_bit_identical():
    # Inference mode: BatchNorm's moving statistics and TF-MOT's step counter must not move.
    model = pruning.wrap(keras.Sequential([
        keras.Input((5, 5, 2)),
        keras.layers.Conv2D(3, 3, name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.ReLU(),
        keras.layers.Flatten(),
        keras.layers.Dense(2, name="out"),
    ]))
    bn = model.get_layer("bn")
    bn.moving_mean.assign([0.5, -0.5, 0.1])
    bn.gamma.assign([-1.0, 2.0, 0.5])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 5, 5, 2)).astype(f32)
    y = np.array([0, 1, 1, 0])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    before = state(model)
    results = [
        scoring.snip_scores(model, [(x, y)], loss),
        scoring.grasp_scores(model, [(x, y)], loss),
        scoring.synflow_scores(model),
    ]
    assert_state_equal(model, before)
    for scores in results:
        assert list(scores) == ["conv", "out"]
        assert scores["conv"].shape == (3, 3, 2, 3) and scores["out"].shape == (27, 2)
        assert all(np.all(np.isfinite(s)) and np.any(s != 0) for s in scores.values())


# -- baselines and errors -------------------------------------------------------------------


def test_magnitude_scores_are_the_absolute_kernels():
    model = snip_model()
    np.testing.assert_array_equal(scoring.magnitude_scores(model)["fc"], np.abs(W).astype(np.float64))


def test_random_scores_depend_only_on_the_seed_and_the_layers():
    masks = {"b": np.ones((2, 3), f32), "a": np.ones(4, f32)}
    one = scoring.random_scores(masks, seed=3)
    again = scoring.random_scores({"a": masks["a"], "b": masks["b"]}, seed=3)
    other = scoring.random_scores(masks, seed=4)
    assert list(one) == ["b", "a"]
    for name in masks:
        assert one[name].shape == masks[name].shape and one[name].dtype == np.float64
        np.testing.assert_array_equal(one[name], again[name])
        assert np.all((0 <= one[name]) & (one[name] < 1))
        assert not np.array_equal(one[name], other[name])


def test_scorers_refuse_an_unwrapped_model_and_empty_batches():
    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="pruning.wrap"):
        scoring.magnitude_scores(plain)
    with pytest.raises(ValueError, match="no batches"):
        scoring.snip_scores(snip_model(), [], keras.losses.MeanSquaredError())
