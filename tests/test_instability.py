"""Linear mode connectivity (tf_lottery.analysis.linear_path): cases whose barrier is known by hand."""

import json

import numpy as np
import pytest
import tf_keras as keras

from tf_lottery.analysis import linear_path as I
from tf_lottery.masking import pruning

f32 = np.float32


# -- interpolate ----------------------------------------------------------------------------


def test_interpolate_returns_copies_of_the_endpoints_at_0_and_1():
    a = [np.array([1.0, -2.0], f32), np.array([[3.0]], f32)]
    b = [np.array([5.0, 6.0], f32), np.array([[-7.0]], f32)]
    for alpha, expected in ((0.0, a), (1.0, b)):
        out = I.interpolate(a, b, alpha)
        for got, want in zip(out, expected):
            assert got.tobytes() == want.tobytes() and got.dtype == want.dtype
            assert got is not want
    out[0][0] = 99.0
    assert b[0][0] == 5.0


def test_interpolate_mixes_linearly_and_keeps_shared_values_exact():
    a = [np.array([0.0, 1.0, 0.1], f32), np.array([0.3], np.float64)]
    b = [np.array([0.0, 3.0, 0.1], f32), np.array([0.3], np.float64)]
    alpha = 1 / 29  # (1 - alpha) * 0.3 + alpha * 0.3 != 0.3 in float64
    assert (1 - alpha) * 0.3 + alpha * 0.3 != 0.3
    np.testing.assert_array_equal(I.interpolate(a, b, 0.25)[0], np.array([0.0, 1.5, 0.1], f32))
    out = I.interpolate(a, b, alpha)
    assert out[0].dtype == np.float32 and out[0][0] == 0.0 and out[0][2] == f32(0.1)
    assert out[1].tobytes() == a[1].tobytes()


def test_interpolate_refuses_mismatched_lists_and_alphas_outside_0_1():
    a = [np.zeros(2, f32)]
    for call, message in [
        (lambda: I.interpolate(a, [], 0.5), "1 arrays"),
        (lambda: I.interpolate(a, [np.zeros(3, f32)], 0.5), r"array 0 is float32\[2\]"),
        (lambda: I.interpolate(a, [np.zeros(2, np.float64)], 0.5), "float64"),
        (lambda: I.interpolate(a, a, 1.5), "outside"),
        (lambda: I.interpolate([np.array([1])], [np.array([2])], 0.5), "cannot interpolate"),
    ]:
        with pytest.raises(ValueError, match=message) as info:
            call()
        assert "\n" not in str(info.value)


# -- error_barrier --------------------------------------------------------------------------


def test_barrier_of_a_flat_path_is_exactly_0():
    assert I.error_barrier([0.137] * 30) == 0.0


def test_barrier_of_a_convex_path_with_equal_endpoints_is_0():
    alphas = np.linspace(0, 1, 30)
    assert I.error_barrier(0.1 - 0.3 * alphas * (1 - alphas)) == 0.0


def test_barrier_of_a_monotone_path_is_half_the_endpoint_gap():
    # The paper's sup includes the endpoints: the worse endpoint sits above the mean.
    assert I.error_barrier([0.1, 0.15, 0.2, 0.3]) == pytest.approx(0.1, abs=1e-15)


def test_barrier_of_a_bump_is_its_height_above_the_endpoint_mean():
    assert I.error_barrier([0.1, 0.4, 0.9, 0.5, 0.2]) == pytest.approx(0.9 - 0.15, abs=1e-15)


def test_barrier_refuses_too_few_points_and_nan():
    with pytest.raises(ValueError, match="two or more"):
        I.error_barrier([0.1])
    with pytest.raises(ValueError, match="NaN"):
        I.error_barrier([0.1, float("nan"), 0.2])


# -- evaluate_path on networks --------------------------------------------------------------

# One input, one linear hidden unit h = w x, logit = v h + c, predict class 1 when logit > 0.
X = np.array([[-2.0], [-1.0], [1.0], [2.0]], f32)
Y = np.array([0, 0, 1, 1])


def one_unit_network():
    model = keras.Sequential([
        keras.Input((1,)),
        keras.layers.Dense(1, use_bias=False, name="hidden"),
        keras.layers.Dense(1, name="out"),
    ])
    return pruning.wrap(model)


def with_weights(model, w, v, c):
    layers = {pruning.layer_name(x): x for x in pruning.prunable_layers(model)}
    layers["hidden"].pruning_vars[0][0].assign([[w]])
    layers["out"].pruning_vars[0][0].assign([[v]])
    layers["out"].layer.bias.assign([c])
    return pruning.snapshot(model)


def classification_error(model):
    logits = model(X, training=False).numpy()[:, 0]
    return float(np.mean((logits > 0).astype(int) != Y))


def test_two_sign_flipped_solutions_have_the_hand_computed_barrier():
    model = one_unit_network()
    # (w, v) and (-w, -v) compute the same function, logit = x - 0.5: both classify all 4 right.
    a = with_weights(model, 1.0, 1.0, -0.5)
    b = with_weights(model, -1.0, -1.0, -0.5)
    result = I.evaluate_path(model, a, b, classification_error, points=30)
    # On the path w = v = 1 - 2 alpha, so logit = (1 - 2 alpha)^2 x - 0.5 with s = (1 - 2 alpha)^2:
    # x < 0 stays right; x = 1 is wrong once s <= 1/2, x = 2 once s <= 1/4 (alpha in [1/4, 3/4]).
    s = (1 - 2 * np.linspace(0, 1, 30)) ** 2
    expected = ((s <= 0.5).astype(float) + (s <= 0.25).astype(float)) / 4
    np.testing.assert_array_equal(result.errors, expected)
    assert result.errors[0] == result.errors[-1] == 0.0
    assert result.barrier == 0.5
    assert result.alphas[0] == 0.0 and result.alphas[-1] == 1.0 and len(result.alphas) == 30


def test_identical_endpoints_have_barrier_exactly_0():
    model = one_unit_network()
    a = with_weights(model, 0.37, -1.3, 0.2)
    loss_like = lambda m: float(np.mean(np.square(m(X, training=False).numpy()[:, 0] - Y)))
    result = I.evaluate_path(model, a, [w.copy() for w in a], loss_like, points=30)
    assert result.barrier == 0.0
    assert len(set(result.errors)) == 1


def test_two_masked_networks_interpolate_with_their_pruned_weights_at_0():
    model = pruning.wrap(keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(4, activation="relu", name="fc"),
        keras.layers.Dense(2, name="out"),
    ]))
    rng = np.random.default_rng(0)
    masks = {n: (rng.random(m.shape) > 0.5).astype(f32) for n, m in pruning.get_masks(model).items()}
    pruning.set_masks(model, masks)
    positions = pruning.kernel_positions(model)
    a = pruning.snapshot(model)
    b = [rng.normal(size=w.shape).astype(w.dtype) for w in a]
    for name, i in positions.items():
        b[i] *= masks[name]
    seen = []

    def record(m):
        kernels = pruning.get_kernels(m)
        seen.append(all(np.all(kernels[n][masks[n] == 0] == 0.0) for n in masks))
        return 0.0

    result = I.evaluate_path(model, a, b, record, points=7)
    assert seen == [True] * 7
    # The default restore leaves the model holding weights_b.
    for got, want in zip(pruning.snapshot(model), b):
        np.testing.assert_array_equal(got, want)
    assert result.barrier == 0.0


def test_path_result_to_dict_is_json_ready():
    result = I.PathResult(alphas=(0.0, 1.0), errors=(np.float64(0.25), 0.5), barrier=0.125)
    as_dict = result.to_dict()
    assert as_dict == {"alphas": [0.0, 1.0], "errors": [0.25, 0.5], "barrier": 0.125}
    json.dumps(as_dict)


def test_evaluate_path_refuses_fewer_than_two_points():
    with pytest.raises(ValueError, match="points"):
        I.evaluate_path(None, [], [], lambda m: 0.0, points=1)
