"""The shuffle sanity check (tf_lottery.sanity) keeps each layer's count and is seeded."""

import numpy as np

from tf_lottery import masks as M
from tf_lottery import sanity

f32 = np.float32


def ticket():
    rng = np.random.default_rng(0)
    return {
        "conv": (rng.random((3, 3, 2, 4)) > 0.8).astype(f32),
        "fc": (rng.random((30, 10)) > 0.5).astype(f32),
        "out": np.array([[1, 0], [0, 0]], f32),
    }


def test_shuffle_keeps_each_layers_shape_dtype_and_count():
    masks = ticket()
    shuffled = sanity.shuffle_masks(masks, seed=1)
    assert list(shuffled) == list(masks)
    for name, mask in masks.items():
        assert shuffled[name].shape == mask.shape and shuffled[name].dtype == np.float32
        assert set(np.unique(shuffled[name])) <= {0.0, 1.0}
        assert np.count_nonzero(shuffled[name]) == np.count_nonzero(mask)
    assert M.layer_weights_remaining(shuffled) == M.layer_weights_remaining(masks)


def test_shuffle_moves_the_survivors_and_is_reproducible_from_its_seed():
    masks = ticket()
    one, again, other = (sanity.shuffle_masks(masks, s) for s in (1, 1, 2))
    for name in ("conv", "fc"):
        assert not np.array_equal(one[name], masks[name])
        np.testing.assert_array_equal(one[name], again[name])
        assert not np.array_equal(one[name], other[name])


def test_shuffle_is_the_random_pruning_control_with_the_tickets_counts():
    masks = ticket()
    expected = M.random_masks(masks, np.random.default_rng(5))
    shuffled = sanity.shuffle_masks(masks, 5)
    for name in masks:
        np.testing.assert_array_equal(shuffled[name], expected[name])


def test_each_position_is_equally_likely_to_survive():
    mask = {"a": np.array([1, 1, 0, 0, 0, 0, 0, 0], f32)}
    hits = sum(sanity.shuffle_masks(mask, seed)["a"] for seed in range(4000))
    # 2 of 8 survive: each position about 1000 times out of 4000 (binomial sd ~27).
    assert np.all(np.abs(hits - 1000) < 150)
