"""Each granularity's mask math by hand on small kernels, and the unit graph it rests on (tied filters,
units fixed by the input or the output layer, layers that cannot be traced)."""

import numpy as np
import pytest
import tf_keras as keras

from tf_lottery.masking import granularity as granular
from tf_lottery.masking import unit_graph


def _mlp():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(4, activation="relu", name="a")(inputs)
    x = keras.layers.Dense(3, activation="relu", name="b")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


def test_unit_masks_keep_the_highest_norm_units_and_mask_their_consumers():
    model = _mlp()
    units = unit_graph.trace(model, ("a", "b", "out"))
    assert [g.producers for g in units.groups] == [("a",), ("b",), ("out",)]
    assert [g.fixed for g in units.groups] == [False, False, True]
    # Column norms of a: unit 0 -> 1, unit 1 -> 5, unit 2 -> 0.5, unit 3 -> 3 (L2 over the column).
    a = np.zeros((6, 4), np.float32)
    a[0, 0], a[:2, 1], a[1, 2], a[0, 3] = 1.0, [3.0, 4.0], 0.5, 3.0
    b = np.array([[1, 2, 3], [1, 2, 3], [1, 2, 3], [1, 2, 3]], np.float32)  # norms 2, 4, 6
    scores = {"a": a, "b": b, "out": np.ones((3, 2), np.float32)}
    ones = {n: np.ones_like(s) for n, s in scores.items()}
    got = granular.unit_masks(scores, ones, {"a": 0.5, "b": 2 / 3, "out": 1.0}, units)
    np.testing.assert_array_equal(got["a"], np.tile([0, 1, 0, 1], (6, 1)))  # units 1 and 3 survive
    # b's rows from a's pruned units are masked, and its lowest-norm unit (0) goes.
    np.testing.assert_array_equal(got["b"], np.array([[0, 0, 0], [0, 1, 1], [0, 0, 0], [0, 1, 1]]))
    np.testing.assert_array_equal(got["out"], np.array([[0, 0], [1, 1], [1, 1]]))  # output keeps both units
    assert granular.check("unit", got, {"a": 0.5, "b": 2 / 3, "out": 1.0}, {}, units) is None


def test_unit_norms_count_only_surviving_weights_and_pruned_units_stay_pruned():
    model = _mlp()
    units = unit_graph.trace(model, ("a", "b", "out"))
    a = np.array([[9, 1, 2, 3]] * 6, np.float32)
    mask = np.ones((6, 4), np.float32)
    mask[:, 0] = 0  # unit 0 already pruned: its large weights do not bring it back
    masks = {"a": mask, "b": np.ones((4, 3), np.float32) * mask[0][:, None], "out": np.ones((3, 2), np.float32)}
    scores = {"a": a, "b": np.ones((4, 3), np.float32), "out": np.ones((3, 2), np.float32)}
    got = granular.unit_masks(scores, masks, {"a": 0.5, "b": 1.0, "out": 1.0}, units)
    np.testing.assert_array_equal(got["a"][0], [0, 0, 1, 1])


def test_unit_counts_are_fractions_of_units():
    units = unit_graph.trace(_mlp(), ("a", "b", "out"))
    assert granular.unit_counts({"a": 0.5, "b": 0.34, "out": 1.0}, units) == {"a": 2, "b": 1}


def test_block_masks_prune_1x4_blocks_along_the_input_dimension():
    # A (8, 2) Dense kernel has blocks rows 0-3 and 4-7 of each column: norms 1, 8 | 6, 2.
    scores = np.zeros((8, 2), np.float32)
    scores[0, 0], scores[4:8, 0] = 1.0, 4.0
    scores[0:4, 1], scores[5, 1] = 3.0, 2.0
    got = granular.block_mask(scores, np.ones((8, 2), np.float32), 0.5)
    want = np.zeros((8, 2), np.float32)
    want[4:8, 0], want[0:4, 1] = 1, 1  # the two highest-norm blocks, each 4 consecutive inputs of one unit
    np.testing.assert_array_equal(got, want)
    assert granular.block_count((8, 2)) == 4


def test_block_masks_pad_an_input_dimension_that_is_not_a_multiple_of_4_and_leave_convolutions_by_weight():
    scores = np.arange(12, dtype=np.float32).reshape(6, 2)  # blocks rows 0-3 and 4-5 (padded)
    got = granular.block_mask(scores, np.ones((6, 2), np.float32), 0.5)
    np.testing.assert_array_equal(got, np.array([[0, 0]] * 4 + [[1, 1]] * 2))  # rows 4-5 have the higher norms
    conv = np.arange(36, dtype=np.float32).reshape(3, 3, 1, 4)
    masks = granular.block_masks({"c": conv}, {"c": np.ones_like(conv)}, {"c": 0.5}, {"c": "conv"})
    assert np.count_nonzero(masks["c"]) == 18 and np.all(masks["c"].ravel()[18:] == 1)  # by weight magnitude


def test_m_by_n_keeps_2_of_every_4_along_the_input_dimension():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(8, 3)).astype(np.float32)
    got = granular.m_by_n_mask(kernel, np.ones_like(kernel))
    for group in range(2):
        for unit in range(3):
            column = np.abs(kernel[4 * group: 4 * group + 4, unit])
            want = np.zeros(4)
            want[np.argsort(column)[2:]] = 1
            np.testing.assert_array_equal(got[4 * group: 4 * group + 4, unit], want)
    conv = rng.normal(size=(3, 3, 8, 2)).astype(np.float32)
    mask = granular.m_by_n_mask(conv, np.ones_like(conv))
    assert np.all(mask.reshape(3, 3, 2, 4, 2).sum(axis=3) == 2)  # per position and filter, groups of input channels
    keep = {"a": 0.5, "b": 0.5, "c": 1.0}
    masks = granular.m_by_n_masks({"a": kernel, "b": np.ones((6, 2)), "c": kernel}, {
        "a": np.ones((8, 3)), "b": np.ones((6, 2)), "c": np.ones((8, 3))}, keep)
    assert np.all(masks["b"] == 1) and np.all(masks["c"] == 1)  # 6 inputs: not a multiple of 4; rate 0: dense
    assert granular.m_by_n_dense_layers({"a": (8, 3), "b": (6, 2), "c": (8, 3)}, keep) == ["b"]
    assert granular.check("m_by_n", masks, keep, {}) is None


def _tied_model():
    inputs = keras.Input((6, 6, 2))
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    x = keras.layers.ReLU()(a)
    b = keras.layers.Conv2D(4, 3, padding="same", name="b")(x)
    x = keras.layers.Add()([a, b])
    x = keras.layers.Flatten()(keras.layers.MaxPooling2D(3)(x))
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x))


def test_an_add_ties_filters_and_they_are_pruned_together():
    model = _tied_model()
    units = unit_graph.trace(model, ("a", "b", "out"))
    group = units.group_of["a"]
    assert units.group_of["b"] == group and set(units.groups[group].producers) == {"a", "b"}
    scores = {"a": np.zeros((3, 3, 2, 4), np.float32), "b": np.zeros((3, 3, 4, 4), np.float32),
              "out": np.ones((16, 3), np.float32)}
    scores["a"][..., 2] = 1.0  # filter 2 of a, filter 0 of b: the highest group norms
    scores["b"][..., 0] = 1.0
    ones = {n: np.ones_like(s) for n, s in scores.items()}
    got = granular.unit_masks(scores, ones, {"a": 0.5, "b": 0.5, "out": 1.0}, units)
    kept = [0, 2]
    for name in ("a", "b"):
        assert [int(f) for f in np.flatnonzero(got[name].reshape(-1, 4).any(axis=0))] == kept
    np.testing.assert_array_equal(got["b"].any(axis=(0, 1, 3)), [True, False, True, False])  # b reads a's filters
    # After 2x2 pooling and Flatten, the output layer's rows cycle through the 4 channels.
    np.testing.assert_array_equal(got["out"][:, 0], np.tile([1, 0, 1, 0], 4))


def test_filters_added_to_the_input_are_kept_whole():
    inputs = keras.Input((6, 6, 4))
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    x = keras.layers.Flatten()(keras.layers.Add()([inputs, a]))
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(x))
    units = unit_graph.trace(model, ("a", "out"))
    group = units.groups[units.group_of["a"]]
    assert group.fixed and "add" in group.why_fixed
    assert granular.unit_counts({"a": 0.5, "out": 1.0}, units) == {}


@pytest.mark.parametrize("layer, name", [(lambda: keras.layers.LayerNormalization(name="norm"), "norm"),
                                         (lambda: keras.layers.Reshape((2, 2), name="reshape"), "reshape")])
def test_a_layer_that_mixes_units_is_refused_in_one_line_naming_it(layer, name):
    inputs = keras.Input((6,))
    x = keras.layers.Dense(4, name="a")(inputs)
    x = layer()(x)
    x = keras.layers.Flatten()(x) if name == "reshape" else x
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    with pytest.raises(ValueError) as e:
        unit_graph.trace(model, ("a", "out"))
    message = str(e.value)
    assert "\n" not in message and f"layer {name!r}" in message and "granularity='unit'" in message


def test_a_softmax_after_the_output_layer_is_allowed():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(4, name="a")(inputs)
    x = keras.layers.Dense(3, name="out")(x)
    model = keras.Model(inputs, keras.layers.Activation("softmax")(x))
    units = unit_graph.trace(model, ("a", "out"))
    assert units.groups[units.group_of["out"]].fixed


def test_random_masks_of_a_granularity_keep_its_structure_and_counts():
    units = unit_graph.trace(_mlp(), ("a", "b", "out"))
    ones = {"a": np.ones((6, 4), np.float32), "b": np.ones((4, 3), np.float32), "out": np.ones((3, 2), np.float32)}
    keep = {"a": 0.5, "b": 2 / 3, "out": 1.0}
    masks = granular.unit_masks({n: np.abs(np.random.default_rng(1).normal(size=m.shape)) for n, m in ones.items()},
                                ones, keep, units)
    shuffled = granular.random_masks("unit", masks, np.random.default_rng(0), {}, units)
    assert granular.check("unit", shuffled, keep, {}, units) is None
    blocks = granular.block_masks({"d": np.arange(16.0).reshape(8, 2)}, {"d": np.ones((8, 2))}, {"d": 0.5}, {"d": "fc"})
    shuffled = granular.random_masks("block", blocks, np.random.default_rng(0), {"d": "fc"})
    assert granular.check("block", shuffled, {"d": 0.5}, {"d": "fc"}) is None
