"""Signed-score selection (masks.py with signed=True, for GraSP): hand-checked masks, and the same
answers as magnitude ranking on non-negative scores."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tf_lottery.masking import masks as M

f32 = np.float32


def arr(values):
    return np.array(values, f32)


class S:
    """The signed selection, as the strategies call it."""

    @staticmethod
    def select_layerwise(scores, masks, keep):
        return M.layerwise_masks(scores, masks, keep, signed=True)

    @staticmethod
    def select_global(scores, masks, fraction):
        return M.global_masks(scores, masks, fraction, signed=True)


# -- layerwise ------------------------------------------------------------------------------


def test_layerwise_ranks_by_the_signed_score_not_its_magnitude():
    scores = {"a": np.array([-5.0, 0.1, 2.0, -0.2])}
    mask = S.select_layerwise(scores, {"a": np.ones(4, f32)}, {"a": 0.5})
    # masks.py would keep -5.0 (largest |score|); signed ranking keeps the two highest scores.
    np.testing.assert_array_equal(mask["a"], arr([0, 1, 1, 0]))
    assert mask["a"].dtype == np.float32


def test_layerwise_prunes_already_pruned_weights_first_and_never_revives_them():
    # The pruned position has the highest score; it must stay pruned.
    scores = {"a": np.array([[9.0, -1.0], [-3.0, -2.0]])}
    mask = S.select_layerwise(scores, {"a": arr([[0, 1], [1, 1]])}, {"a": 0.5})
    np.testing.assert_array_equal(mask["a"], arr([[0, 1], [0, 1]]))


def test_layerwise_breaks_ties_by_pruning_the_lower_flat_index_first():
    scores = {"a": np.array([-1.0, -1.0, -1.0, -1.0])}
    mask = S.select_layerwise(scores, {"a": np.ones(4, f32)}, {"a": 0.5})
    np.testing.assert_array_equal(mask["a"], arr([0, 0, 1, 1]))


def test_layerwise_counts_against_the_full_size_and_keeps_at_least_one():
    scores = {"a": np.arange(10.0) - 5.0, "b": np.array([-3.0, -1.0, -2.0])}
    masks = {"a": np.ones(10, f32), "b": np.ones(3, f32)}
    out = S.select_layerwise(scores, masks, {"a": 0.64, "b": 0.01})  # 6.4 -> 6; 0.03 -> 1
    np.testing.assert_array_equal(out["a"], arr([0, 0, 0, 0, 1, 1, 1, 1, 1, 1]))
    np.testing.assert_array_equal(out["b"], arr([0, 1, 0]))


# -- global ---------------------------------------------------------------------------------


def test_global_pools_layers_by_signed_score():
    scores = {"a": np.array([-4.0, 1.0]), "b": np.array([0.5, -0.1, 3.0, -2.0])}
    masks = {"a": np.ones(2, f32), "b": np.ones(4, f32)}
    out = S.select_global(scores, masks, 0.5)  # keep 3 of 6: 3.0, 1.0, 0.5
    np.testing.assert_array_equal(out["a"], arr([0, 1]))
    np.testing.assert_array_equal(out["b"], arr([1, 0, 1, 0]))


def test_global_ties_go_to_the_earlier_layer_then_the_lower_index():
    scores = {"a": np.array([-1.0, 5.0]), "b": np.array([-1.0, -1.0])}
    masks = {"a": np.ones(2, f32), "b": np.ones(2, f32)}
    out = S.select_global(scores, masks, 0.5)
    # Three tied at -1 in pooled order a[0], b[0], b[1]: the first two are pruned.
    np.testing.assert_array_equal(out["a"], arr([0, 1]))
    np.testing.assert_array_equal(out["b"], arr([0, 1]))


def test_global_keeps_the_best_survivor_of_a_layer_the_threshold_would_empty():
    scores = {"a": np.array([-9.0, -7.0, -8.0]), "b": np.array([1.0, 2.0, 3.0])}
    masks = {"a": arr([1, 1, 0]), "b": np.ones(3, f32)}
    out = S.select_global(scores, masks, 0.5)
    np.testing.assert_array_equal(out["a"], arr([0, 1, 0]))  # -7 beats -9; a[2] stays pruned
    np.testing.assert_array_equal(out["b"], arr([1, 1, 1]))


def test_global_never_revives_pruned_weights():
    scores = {"a": np.array([100.0, -1.0, -2.0, -3.0])}
    out = S.select_global(scores, {"a": arr([0, 1, 1, 1])}, 0.5)
    np.testing.assert_array_equal(out["a"], arr([0, 1, 1, 0]))


def test_non_finite_scores_at_surviving_positions_are_refused_in_one_line():
    masks = {"a": np.ones(2, f32)}
    for call in (lambda: S.select_global({"a": np.array([np.nan, 1.0])}, masks, 0.5),
                 lambda: S.select_layerwise({"a": np.array([np.inf, 1.0])}, masks, {"a": 0.5})):
        with pytest.raises(ValueError, match="not finite") as info:
            call()
        assert "\n" not in str(info.value)


def test_non_finite_scores_at_pruned_positions_are_ignored():
    scores = {"a": np.array([np.nan, 1.0, -np.inf, 2.0])}
    out = S.select_global(scores, {"a": arr([0, 1, 0, 1])}, 0.25)
    np.testing.assert_array_equal(out["a"], arr([0, 0, 0, 1]))


# -- equal to masks.py on non-negative scores -------------------------------------------------

layer_shapes = st.lists(st.integers(1, 12), min_size=1, max_size=4)


@st.composite
def scored_layers(draw):
    sizes = draw(layer_shapes)
    # Few distinct values, so ties are common.
    values = st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0])
    scores, masks = {}, {}
    for i, size in enumerate(sizes):
        scores[f"l{i}"] = draw(hnp.arrays(np.float64, size, elements=values))
        masks[f"l{i}"] = draw(hnp.arrays(np.float32, size, elements=st.sampled_from([0.0, 1.0])))
    return scores, masks


fractions = st.floats(0.01, 1.0)


@settings(max_examples=300, deadline=None)
@given(scored_layers(), fractions)
def test_global_equals_masks_global_masks_on_non_negative_scores(layers, fraction):
    scores, masks = layers
    ours = S.select_global(scores, masks, fraction)
    theirs = M.global_masks(scores, masks, fraction)
    assert list(ours) == list(theirs)
    for name in theirs:
        assert ours[name].dtype == theirs[name].dtype
        assert ours[name].tobytes() == theirs[name].tobytes()


@settings(max_examples=300, deadline=None)
@given(scored_layers(), fractions)
def test_layerwise_equals_masks_layerwise_masks_on_non_negative_scores(layers, fraction):
    scores, masks = layers
    fractions_by_layer = {name: fraction for name in masks}
    ours = S.select_layerwise(scores, masks, fractions_by_layer)
    theirs = M.layerwise_masks(scores, masks, fractions_by_layer)
    for name in theirs:
        assert ours[name].tobytes() == theirs[name].tobytes()


@settings(max_examples=100, deadline=None)
@given(scored_layers(), fractions)
def test_signed_selection_is_monotone_and_keeps_the_counted_number(layers, fraction):
    scores = {n: s - 1.0 for n, s in layers[0].items()}  # signed now
    masks = {n: np.maximum(m, np.eye(1, m.size, 0, f32)[0]) for n, m in layers[1].items()}  # >= 1 survivor
    out = S.select_global(scores, masks, fraction)
    assert M.is_subset(out, masks)
    assert all(np.count_nonzero(m) >= 1 for m in out.values())
    expected = M.keep_count(sum(m.size for m in masks.values()), fraction)
    expected = min(expected, sum(int(np.count_nonzero(m)) for m in masks.values()))
    kept = sum(int(np.count_nonzero(m)) for m in out.values())
    # The pooled count, plus at most one rescued weight for each layer the threshold emptied.
    assert expected <= kept <= expected + len(masks)
