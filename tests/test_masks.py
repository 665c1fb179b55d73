"""Pure mask math (tf_lottery.masking.masks) on small arrays with hand-checked answers, plus properties."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tf_lottery.masking import masks as M

f32 = np.float32


def arr(values):
    return np.array(values, f32)


# -- keep_count ------------------------------------------------------------------------------


def test_keep_count_rounds_against_the_original_size():
    assert M.keep_count(10, 1.0) == 10
    assert M.keep_count(10, 0.8) == 8
    assert M.keep_count(10, 0.64) == 6  # 6.4 rounds down
    assert M.keep_count(10, 0.512) == 5  # 5.12
    assert M.keep_count(10, 0.66) == 7  # 6.6 rounds up
    assert M.keep_count(100, 0.8**3) == 51  # 51.2
    assert M.keep_count(266_200, 0.8) == 212_960


def test_keep_count_keeps_at_least_one_weight():
    assert M.keep_count(10, 0.01) == 1
    assert M.keep_count(1, 1e-9) == 1
    assert M.keep_count(4, 0.1) == 1  # 0.4 would round to 0


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5, float("nan")])
def test_keep_count_rejects_fractions_outside_0_1(fraction):
    with pytest.raises(ValueError, match="outside") as info:
        M.keep_count(10, fraction)
    assert "\n" not in str(info.value)


# -- layerwise magnitude pruning -----------------------------------------------------------


def test_magnitude_mask_keeps_the_largest_magnitudes():
    kernel = arr([[0.5, -0.1], [0.3, -0.9]])
    mask = M.magnitude_mask(kernel, np.ones((2, 2), f32), 0.5)
    np.testing.assert_array_equal(mask, arr([[1, 0], [0, 1]]))
    assert mask.dtype == np.float32


def test_magnitude_mask_counts_against_the_full_size_not_the_survivors():
    kernel = arr([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    level1 = M.magnitude_mask(kernel, np.ones(10, f32), 0.8)
    np.testing.assert_array_equal(level1, arr([1, 1, 1, 1, 1, 1, 1, 1, 0, 0]))
    level2 = M.magnitude_mask(kernel, level1, 0.8**2)  # 6.4 -> 6 of 10, not 0.8 * 8
    np.testing.assert_array_equal(level2, arr([1, 1, 1, 1, 1, 1, 0, 0, 0, 0]))


def test_magnitude_mask_never_revives_pruned_weights():
    # The pruned weight has grown the largest (it cannot in training, but the math must not care).
    kernel = arr([0.1, 5.0, 0.2, 0.3])
    mask = M.magnitude_mask(kernel, arr([1, 0, 1, 1]), 0.5)
    np.testing.assert_array_equal(mask, arr([0, 0, 1, 1]))


def test_magnitude_mask_keeps_one_weight_when_rounding_would_keep_none():
    kernel = arr([0.3, -0.7, 0.2])
    mask = M.magnitude_mask(kernel, np.ones(3, f32), 0.1)
    np.testing.assert_array_equal(mask, arr([0, 1, 0]))


def test_magnitude_mask_breaks_ties_by_pruning_the_lower_flat_index_first():
    kernel = arr([[0.2, -0.2], [0.2, 0.2]])
    mask = M.magnitude_mask(kernel, np.ones((2, 2), f32), 0.5)
    np.testing.assert_array_equal(mask, arr([[0, 0], [1, 1]]))
    kernel = arr([0.0, 0.4, 0.0, 0.4, 0.1])
    np.testing.assert_array_equal(M.magnitude_mask(kernel, np.ones(5, f32), 0.2), arr([0, 0, 0, 1, 0]))


def test_magnitude_mask_prefers_a_zero_survivor_over_a_pruned_weight():
    # A surviving weight of value 0 still outranks a pruned one.
    kernel = arr([0.0, 0.0, 0.5])
    mask = M.magnitude_mask(kernel, arr([1, 0, 1]), 2 / 3)
    np.testing.assert_array_equal(mask, arr([1, 0, 1]))


def test_magnitude_mask_rejects_a_mask_of_another_shape():
    with pytest.raises(ValueError, match=r"shape \(2, 2\).*shape \(4,\)"):
        M.magnitude_mask(np.ones(4, f32), np.ones((2, 2), f32), 0.5)


def test_layerwise_masks_prune_each_layer_to_its_own_fraction():
    kernels = {"fc1": arr([0.1, 0.4, -0.3, 0.2]), "out": arr([[0.5, -0.6], [0.05, 0.7]])}
    masks = M.layerwise_masks(kernels, M.ones_like(kernels), {"fc1": 0.5, "out": 0.75})
    np.testing.assert_array_equal(masks["fc1"], arr([0, 1, 1, 0]))
    np.testing.assert_array_equal(masks["out"], arr([[1, 1], [0, 1]]))


def test_ones_like_is_dense():
    masks = M.ones_like({"a": np.zeros((2, 3)), "b": np.zeros(4)})
    np.testing.assert_array_equal(masks["a"], np.ones((2, 3), f32))
    assert masks["b"].dtype == np.float32 and masks["b"].sum() == 4


# -- global magnitude pruning --------------------------------------------------------------


def test_global_masks_three_layers_with_a_hand_computed_threshold():
    kernels = {
        "a": arr([[0.9, -0.05], [0.4, 0.3]]),
        "b": arr([0.2, -0.7, 0.01, 0.6, 0.15, -0.35]),
        "c": arr([0.8, 0.25]),
    }
    # 12 weights, keep 6: |w| in descending order 0.9 0.8 0.7 0.6 0.4 0.35 | 0.3 0.25 0.2 ...
    masks = M.global_masks(kernels, M.ones_like(kernels), 0.5)
    np.testing.assert_array_equal(masks["a"], arr([[1, 0], [1, 0]]))
    np.testing.assert_array_equal(masks["b"], arr([0, 1, 0, 1, 0, 1]))
    np.testing.assert_array_equal(masks["c"], arr([1, 0]))
    # One more level (keep round(12 * 0.25) = 3): 0.9 0.8 0.7.
    masks = M.global_masks(kernels, masks, 0.25)
    np.testing.assert_array_equal(masks["a"], arr([[1, 0], [0, 0]]))
    np.testing.assert_array_equal(masks["b"], arr([0, 1, 0, 0, 0, 0]))
    np.testing.assert_array_equal(masks["c"], arr([1, 0]))


def test_global_masks_two_layers_differ_from_layerwise():
    kernels = {"a": arr([1.0, 2.0, 3.0, 4.0]), "b": arr([0.1, 0.2, 0.3, 0.4])}
    masks = M.global_masks(kernels, M.ones_like(kernels), 0.5)
    np.testing.assert_array_equal(masks["a"], arr([1, 1, 1, 1]))
    # b would be empty; it keeps its largest weight, so the pool keeps one weight more.
    np.testing.assert_array_equal(masks["b"], arr([0, 0, 0, 1]))


def test_global_masks_never_cut_a_layer_entirely():
    kernels = {"a": arr([0.01, 0.02]), "b": arr([1.0, 2.0, 3.0, 4.0])}
    masks = M.global_masks(kernels, M.ones_like(kernels), 0.5)
    np.testing.assert_array_equal(masks["a"], arr([0, 1]))
    np.testing.assert_array_equal(masks["b"], arr([0, 1, 1, 1]))
    # The layer's largest *surviving* weight is kept, never a pruned one.
    masks = M.global_masks({"a": arr([5.0, 0.01]), "b": kernels["b"] * 10}, {"a": arr([0, 1]), "b": masks["b"]}, 0.5)
    np.testing.assert_array_equal(masks["a"], arr([0, 1]))


def test_global_masks_break_ties_toward_the_earlier_layer_then_the_lower_index():
    kernels = {"a": arr([0.2, 0.5]), "b": arr([0.2, 0.1])}
    masks = M.global_masks(kernels, M.ones_like(kernels), 0.5)
    # ascending: b1 0.1, a0 0.2, b0 0.2, a1 0.5 -> a0 (earlier layer) goes before b0.
    np.testing.assert_array_equal(masks["a"], arr([0, 1]))
    np.testing.assert_array_equal(masks["b"], arr([1, 0]))
    kernels = {"a": arr([0.3, 0.3, 0.3]), "b": arr([0.3, 0.3, 0.3])}
    masks = M.global_masks(kernels, M.ones_like(kernels), 0.5)
    # a would be empty: it keeps its last-ranked (highest flat index) weight.
    np.testing.assert_array_equal(masks["a"], arr([0, 0, 1]))
    np.testing.assert_array_equal(masks["b"], arr([1, 1, 1]))


def test_global_masks_never_revive_pruned_weights():
    kernels = {"a": arr([9.0, 0.1, 0.2]), "b": arr([0.3, 8.0])}
    masks = M.global_masks(kernels, {"a": arr([0, 1, 1]), "b": arr([1, 0])}, 0.4)  # keep 2 of 5
    np.testing.assert_array_equal(masks["a"], arr([0, 0, 1]))
    np.testing.assert_array_equal(masks["b"], arr([1, 0]))


def test_global_masks_of_no_layers_is_empty():
    assert M.global_masks({}, {}, 0.5) == {}


# -- random masks and accounting -----------------------------------------------------------


def test_random_masks_keep_exact_counts_and_are_reproducible_per_seed():
    base = {
        "a": M.magnitude_mask(np.arange(1, 101, dtype=f32).reshape(10, 10), np.ones((10, 10), f32), 0.37),
        "b": arr([1, 0, 0, 1, 1, 0, 0, 0]),
    }
    first = M.random_masks(base, np.random.default_rng(7))
    again = M.random_masks(base, np.random.default_rng(7))
    other = M.random_masks(base, np.random.default_rng(8))
    for name in base:
        assert first[name].shape == base[name].shape and first[name].dtype == np.float32
        assert np.count_nonzero(first[name]) == np.count_nonzero(base[name])
        assert set(np.unique(first[name])) <= {0.0, 1.0}
        np.testing.assert_array_equal(first[name], again[name])
    assert np.count_nonzero(first["a"]) == 37
    assert not np.array_equal(first["a"], other["a"])


def test_weights_remaining_and_layer_weights_remaining():
    masks = {"a": arr([[1, 0], [1, 0]]), "b": arr([1, 1, 0, 0, 0, 0])}
    assert M.weights_remaining(masks) == pytest.approx(0.4)
    assert M.layer_weights_remaining(masks) == {"a": 0.5, "b": pytest.approx(1 / 3)}
    assert M.weights_remaining(M.ones_like({"a": np.zeros(5)})) == 1.0
    assert M.weights_remaining({}) == 1.0


def test_is_subset():
    old = {"a": arr([1, 1, 0])}
    assert M.is_subset({"a": arr([1, 0, 0])}, old)
    assert not M.is_subset({"a": arr([0, 1, 1])}, old)


# -- properties ----------------------------------------------------------------------------

PROPERTY = settings(max_examples=50, deadline=None)

# Few distinct magnitudes, so ties at the cut are common.
_tied_values = st.sampled_from([0.0, 0.25, -0.25, 0.5, -0.5, 1.0, -1.0, 2.0])
_kernels = hnp.arrays(
    np.float32, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=7), elements=_tied_values
) | hnp.arrays(
    np.float32,
    hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=12),
    elements=st.floats(-10, 10, width=32, allow_nan=False),
)
_rates = st.floats(0.05, 0.9)


def _trained(kernel: np.ndarray, seed: int, round_index: int) -> np.ndarray:
    """Stand-in for a round of training: new magnitudes every round, same shape."""
    rng = np.random.default_rng([seed, round_index])
    return (kernel + rng.normal(size=kernel.shape)).astype(f32)


@PROPERTY
@given(kernel=_kernels, rate=_rates, rounds=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_layerwise_pruning_is_monotone_and_exact_at_every_level(kernel, rate, rounds, seed):
    mask = np.ones(kernel.shape, f32)
    for level in range(1, rounds + 1):
        new = M.magnitude_mask(_trained(kernel, seed, level), mask, (1 - rate) ** level)
        assert M.is_subset({"k": new}, {"k": mask})
        kept = np.count_nonzero(new)
        assert kept == M.keep_count(kernel.size, (1 - rate) ** level)
        assert abs(kept - kernel.size * (1 - rate) ** level) <= 1 or kept == 1
        mask = new


@PROPERTY
@given(kernel=_kernels, fraction=st.floats(0.01, 1.0))
def test_magnitude_ties_are_broken_by_flat_index(kernel, fraction):
    mask = M.magnitude_mask(kernel, np.ones(kernel.shape, f32), fraction)
    np.testing.assert_array_equal(mask, M.magnitude_mask(kernel.copy(), np.ones(kernel.shape, f32), fraction))
    magnitudes = np.abs(kernel.reshape(-1))
    kept = np.flatnonzero(mask.reshape(-1))
    pruned = np.flatnonzero(mask.reshape(-1) == 0)
    for i in pruned:
        # every pruned weight ranks below every kept one: smaller, or equal with a lower index
        assert np.all((magnitudes[i] < magnitudes[kept]) | ((magnitudes[i] == magnitudes[kept]) & (i < kept)))


@PROPERTY
@given(kernel=_kernels, fraction=st.floats(0.01, 1.0), start=st.floats(0.3, 1.0), seed=st.integers(0, 2**16))
def test_global_and_layerwise_agree_on_one_layer(kernel, fraction, start, seed):
    # start from a partly pruned mask with at least as many survivors as the target keeps
    rng = np.random.default_rng(seed)
    mask = M.random_masks({"k": M.magnitude_mask(kernel, np.ones(kernel.shape, f32), max(start, fraction))}, rng)["k"]
    layerwise = M.layerwise_masks({"k": kernel}, {"k": mask}, {"k": fraction})
    pooled = M.global_masks({"k": kernel}, {"k": mask}, fraction)
    np.testing.assert_array_equal(layerwise["k"], pooled["k"])


@PROPERTY
@given(
    kernels=st.lists(_kernels, min_size=1, max_size=3),
    rate=_rates,
    rounds=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_global_pruning_is_monotone_and_keeps_the_pool_fraction(kernels, rate, rounds, seed):
    kernels = {f"layer{i}": k for i, k in enumerate(kernels)}
    total = sum(k.size for k in kernels.values())
    masks = M.ones_like(kernels)
    for level in range(1, rounds + 1):
        trained = {n: _trained(k, seed, level) for n, k in kernels.items()}
        new = M.global_masks(trained, masks, (1 - rate) ** level)
        assert M.is_subset(new, masks)
        assert all(np.count_nonzero(m) >= 1 for m in new.values())
        kept = sum(np.count_nonzero(m) for m in new.values())
        target = M.keep_count(total, (1 - rate) ** level)
        # at most one extra weight for each layer the threshold would have emptied
        assert target <= kept <= target + len(kernels) - 1
        np.testing.assert_array_equal(
            np.concatenate([m.ravel() for m in new.values()]),
            np.concatenate([m.ravel() for m in M.global_masks(trained, masks, (1 - rate) ** level).values()]),
        )
        masks = new
