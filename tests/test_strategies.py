"""Pruning strategies (tf_lottery.strategies): the registry, the keep fractions, the selection of the
next mask (layerwise, global, signed) on hand-checked arrays, and the at-init scorers on a tiny model."""

import dataclasses
import importlib
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tf_lottery.masking import masks as M
from tf_lottery import strategies as S
from tf_lottery.config import PruningConfig
from tf_lottery.strategies import PruneInputs

f32 = np.float32
NAMES = ["magnitude", "random", "magnitude_init", "snip", "grasp", "grasp_magnitude", "synflow"]
AT_INIT = ["magnitude_init", "snip", "grasp", "grasp_magnitude", "synflow"]


def arr(values):
    return np.array(values, f32)


def ones(scores):
    return {name: np.ones(np.shape(s), f32) for name, s in scores.items()}


def assert_masks_equal(actual, expected):
    assert list(actual) == list(expected)
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name], err_msg=name)
        assert actual[name].dtype == f32


# -- the registry ----------------------------------------------------------------------------------


def test_names_in_registry_order():
    assert S.names() == NAMES


def test_an_unknown_strategy_is_one_line_listing_the_known_ones():
    with pytest.raises(ValueError) as info:
        S.get("l1")
    assert str(info.value) == f"unknown pruning_strategy 'l1'; allowed: {', '.join(NAMES)}"


def test_every_strategy_module_is_registered_under_its_strategys_name():
    folder = os.path.dirname(S.__file__)
    files = {name[:-3] for name in os.listdir(folder) if name.endswith(".py")} - {"base", "__init__"}
    assert set(S._MODULES.values()) == {f"tf_lottery.strategies.{name}" for name in files}
    for name, module in S._MODULES.items():
        strategy = importlib.import_module(module).STRATEGY
        assert isinstance(strategy, S.Strategy)
        assert strategy.name == name
        assert S.get(name) is strategy
        assert strategy.description


def test_strategy_kinds():
    assert [n for n in NAMES if S.get(n).at_init] == AT_INIT
    assert [n for n in NAMES if S.get(n).signed] == ["grasp"]
    assert [n for n in NAMES if S.get(n).needs_model] == ["snip", "grasp", "grasp_magnitude", "synflow"]
    assert [n for n in NAMES if S.get(n).select is not None] == ["synflow"]


# -- keep fractions --------------------------------------------------------------------------------

KINDS = {"conv1": "conv", "fc1": "fc", "out": "fc"}


def test_keep_fractions_by_kind_with_the_output_at_half_rate():
    keep = S.keep_fractions(PruningConfig(fc_rate=0.2, conv_rate=0.1), KINDS, 2)
    assert keep == pytest.approx({"conv1": 0.81, "fc1": 0.64, "out": 0.81})  # out: 0.2 / 2 = 0.1


def test_keep_fractions_output_at_half_of_its_own_kind():
    keep = S.keep_fractions(PruningConfig(fc_rate=0.2, conv_rate=0.1), {"c1": "conv", "c2": "conv"}, 2)
    assert keep == pytest.approx({"c1": 0.81, "c2": 0.95**2})


def test_keep_fractions_with_an_output_rate():
    assert S.keep_fractions(PruningConfig(output_rate=0.0), KINDS, 5)["out"] == 1.0  # dense output
    assert S.keep_fractions(PruningConfig(output_rate=0.5), KINDS, 3)["out"] == pytest.approx(0.125)


def test_keep_fractions_at_level_0_keep_everything():
    assert S.keep_fractions(PruningConfig(), KINDS, 0) == {"conv1": 1.0, "fc1": 1.0, "out": 1.0}


# -- selection -------------------------------------------------------------------------------------

# conv (4 weights), fc (6) and the output (4): at conv_rate 0.5 the global pool of conv+fc keeps 5 of 10.
SCORES = {
    "conv": arr([[0.9, -0.1], [0.8, 0.05]]),
    "fc": arr([0.7, 0.6, -0.5, 0.02, 0.3, 0.01]),
    "out": arr([0.4, -0.3, 0.2, 0.1]),
}
MIXED = {"conv": "conv", "fc": "fc", "out": "fc"}
HALF = dict(conv_rate=0.5, fc_rate=0.2, output_rate=0.5)


def test_select_layerwise_by_hand():
    masks = S.select(PruningConfig(**HALF), SCORES, ones(SCORES), MIXED, 1)
    assert_masks_equal(masks, {
        "conv": arr([[1, 0], [1, 0]]),  # 2 of 4
        "fc": arr([1, 1, 1, 1, 1, 0]),  # round(0.8 * 6) = 5 of 6: all but the 0.01
        "out": arr([1, 1, 0, 0]),  # |0.4|, |-0.3|
    })


def test_select_global_pools_all_but_the_output_at_the_conv_rate():
    masks = S.select(PruningConfig(pruning_scope="global", **HALF), SCORES, ones(SCORES), MIXED, 1)
    # Pool: 0.9 0.1 0.8 0.05 | 0.7 0.6 0.5 0.02 0.3 0.01 keeps its 5 largest magnitudes (at fc's
    # rate it would keep 8); the output is selected on its own.
    assert_masks_equal(masks, {
        "conv": arr([[1, 0], [1, 0]]),
        "fc": arr([1, 1, 1, 0, 0, 0]),
        "out": arr([1, 1, 0, 0]),
    })


def test_select_global_of_fc_layers_pools_at_the_fc_rate():
    scores = {"fc1": SCORES["conv"].reshape(-1), "fc2": SCORES["fc"], "out": SCORES["out"]}
    config = PruningConfig(pruning_scope="global", fc_rate=0.2, conv_rate=0.5, output_rate=0.5)
    masks = S.select(config, scores, ones(scores), {"fc1": "fc", "fc2": "fc", "out": "fc"}, 1)
    # The pool keeps 8 of 10 (at conv's rate it would keep 5): all but the 0.02 and the 0.01.
    assert_masks_equal(masks, {"fc1": arr([1, 1, 1, 1]), "fc2": arr([1, 1, 1, 0, 1, 0]), "out": arr([1, 1, 0, 0])})


def test_select_never_revives_a_pruned_weight():
    current = ones(SCORES)
    current["fc"] = arr([0, 1, 1, 1, 1, 1])  # the 0.7 is already gone
    masks = S.select(PruningConfig(**HALF), SCORES, current, MIXED, 2)  # fc keeps round(0.64 * 6) = 4
    np.testing.assert_array_equal(masks["fc"], arr([0, 1, 1, 1, 1, 0]))
    assert M.is_subset(masks, current)


def test_select_returns_the_masks_in_the_current_masks_order():
    current = {name: np.ones(np.shape(SCORES[name]), f32) for name in ("out", "fc", "conv")}
    for scope in ("layerwise", "global"):
        masks = S.select(PruningConfig(pruning_scope=scope, **HALF), SCORES, current, MIXED, 1)
        assert list(masks) == ["out", "fc", "conv"]


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(np.float64, (3, 4), elements=st.floats(-5, 5, width=32)),
    hnp.arrays(np.float64, (5,), elements=st.floats(-5, 5, width=32)),
    st.integers(0, 6),
)
def test_select_layerwise_is_layerwise_masks_on_magnitudes(a, b, level):
    scores = {"fc": a, "out": b}
    config = PruningConfig(fc_rate=0.3)
    kinds = {"fc": "fc", "out": "fc"}
    expected = M.layerwise_masks({n: np.abs(s) for n, s in scores.items()}, ones(scores),
                                 S.keep_fractions(config, kinds, level))
    assert_masks_equal(S.select(config, scores, ones(scores), kinds, level), expected)


def test_signed_selection_ranks_by_the_score_itself():
    scores = {"fc": arr([-0.9, 0.1, 0.5, -0.2]), "out": arr([0.3, -0.4])}
    kinds = {"fc": "fc", "out": "fc"}
    config = PruningConfig(fc_rate=0.5, output_rate=0.5)
    assert_masks_equal(S.select(config, scores, ones(scores), kinds, 1, signed=True),
                       {"fc": arr([0, 1, 1, 0]), "out": arr([1, 0])})
    assert_masks_equal(S.select(config, scores, ones(scores), kinds, 1),
                       {"fc": arr([1, 0, 1, 0]), "out": arr([0, 1])})


# -- expected counts -------------------------------------------------------------------------------

SIZES = {"conv": 4, "fc": 6, "out": 4}


def test_expected_counts_layerwise_by_hand():
    config = PruningConfig(fc_rate=0.2, conv_rate=0.5)  # output at 0.1
    assert S.expected_counts(config, MIXED, SIZES, 1) == {"layers": {"conv": 2, "fc": 5, "out": 4}}  # 3.6 -> 4
    assert S.expected_counts(config, MIXED, SIZES, 2) == {"layers": {"conv": 1, "fc": 4, "out": 3}}  # 3.84 -> 4, 3.24 -> 3


def test_expected_counts_global_by_hand():
    config = PruningConfig(pruning_scope="global", **HALF)
    assert S.expected_counts(config, MIXED, SIZES, 1) == {
        "layers": {"out": 2}, "pool": ["conv", "fc"], "pool_range": (5, 7),  # each pooled layer may keep one more
    }


@pytest.mark.parametrize("scope", ["layerwise", "global"])
@pytest.mark.parametrize("level", [1, 2, 3, 6])
def test_selected_masks_have_the_expected_counts(scope, level):
    config = PruningConfig(pruning_scope=scope, **HALF)
    masks = S.select(config, SCORES, ones(SCORES), MIXED, level)
    counts = {n: int(np.count_nonzero(m)) for n, m in masks.items()}
    expected = S.expected_counts(config, MIXED, SIZES, level)
    for name, count in expected["layers"].items():
        assert counts[name] == count
    if scope == "global":
        low, high = expected["pool_range"]
        assert low <= sum(counts[n] for n in expected["pool"]) <= high


# -- prune -----------------------------------------------------------------------------------------


def inputs(kernels, level=1, seed=0, current=None, kinds=MIXED):
    return PruneInputs(kinds=kinds, kernels=kernels, masks=current or ones(kernels), level=level, seed=seed)


def test_prune_with_magnitude_by_hand():
    assert_masks_equal(S.prune(PruningConfig(**HALF), inputs(SCORES)), {
        "conv": arr([[1, 0], [1, 0]]), "fc": arr([1, 1, 1, 1, 1, 0]), "out": arr([1, 1, 0, 0]),
    })
    assert_masks_equal(S.prune(PruningConfig(pruning_scope="global", **HALF), inputs(SCORES)), {
        "conv": arr([[1, 0], [1, 0]]), "fc": arr([1, 1, 1, 0, 0, 0]), "out": arr([1, 1, 0, 0]),
    })


def test_magnitude_at_init_scores_like_magnitude():
    for level in (1, 2, 3):
        assert_masks_equal(S.prune(PruningConfig(pruning_strategy="magnitude_init", **HALF), inputs(SCORES, level)),
                           S.prune(PruningConfig(**HALF), inputs(SCORES, level)))


def random_scores(kernels, seed, level):
    return S.get("random").scores(inputs(kernels, level=level, seed=seed))


def test_random_scores_depend_only_on_the_seed_and_the_level():
    other = {name: -3 * k + 1 for name, k in SCORES.items()}
    pruned = ones(SCORES)
    pruned["fc"][:3] = 0
    base = random_scores(SCORES, 5, 2)
    for same in (random_scores(other, 5, 2), S.get("random").scores(inputs(SCORES, 2, 5, current=pruned))):
        for name in SCORES:
            np.testing.assert_array_equal(same[name], base[name])
    for changed in (random_scores(SCORES, 6, 2), random_scores(SCORES, 5, 3)):
        assert not np.array_equal(changed["fc"], base["fc"])
    assert all(base[n].shape == SCORES[n].shape for n in SCORES)


def test_random_pruning_keeps_the_counts_of_the_rates():
    big = {"conv": np.zeros((10, 10), f32), "fc": np.zeros(50, f32), "out": np.zeros(20, f32)}
    config = PruningConfig(pruning_strategy="random", **HALF)
    first = S.prune(config, inputs(big, level=1, seed=3))
    assert {n: int(np.count_nonzero(m)) for n, m in first.items()} == {"conv": 50, "fc": 40, "out": 10}
    second = S.prune(config, inputs(big, level=2, seed=3, current=first))
    assert {n: int(np.count_nonzero(m)) for n, m in second.items()} == {"conv": 25, "fc": 32, "out": 5}
    assert M.is_subset(second, first)
    assert_masks_equal(S.prune(config, inputs(big, level=1, seed=3)), first)
    assert not np.array_equal(S.prune(config, inputs(big, level=1, seed=4))["conv"], first["conv"])


def test_prune_ranks_a_signed_strategys_scores_by_sign(monkeypatch):
    module = importlib.import_module(S._MODULES["grasp"])
    hand = {"a": arr([-0.9, 0.1]), "b": arr([0.5, -0.2]), "out": arr([0.3, -0.4])}
    monkeypatch.setattr(module, "STRATEGY", dataclasses.replace(module.STRATEGY, scores=lambda _: hand))
    kinds = {"a": "fc", "b": "fc", "out": "fc"}
    kernels = {n: np.zeros_like(s) for n, s in hand.items()}
    config = PruningConfig(pruning_strategy="grasp", fc_rate=0.5, output_rate=0.5)
    assert_masks_equal(S.prune(config, inputs(kernels, kinds=kinds)),
                       {"a": arr([0, 1]), "b": arr([1, 0]), "out": arr([1, 0])})
    global_config = dataclasses.replace(config, pruning_scope="global")
    # The pool keeps 2 of 4 by the highest scores (0.5, 0.1), not the largest magnitudes (-0.9, 0.5).
    assert_masks_equal(S.prune(global_config, inputs(kernels, kinds=kinds)),
                       {"a": arr([0, 1]), "b": arr([1, 0]), "out": arr([1, 0])})


# -- at-init strategies on a tiny wrapped model ----------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    """A wrapped 4-6-3 dense network, a batch of 8 examples and a logits loss."""
    import tf_keras as keras

    from tf_lottery.masking import pruning

    init = keras.initializers.GlorotNormal
    model = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(6, activation="relu", kernel_initializer=init(seed=1), name="fc1"),
        keras.layers.Dense(3, kernel_initializer=init(seed=2), name="out"),
    ])
    wrapped = pruning.wrap(model)
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(8, 4)).astype(f32), rng.integers(0, 3, size=8))]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return wrapped, batches, loss


@pytest.mark.parametrize("scope", ["layerwise", "global"])
@pytest.mark.parametrize("name", AT_INIT)
def test_at_init_strategies_prune_a_wrapped_model_to_the_expected_counts(tiny, name, scope):
    from tf_lottery.masking import pruning

    wrapped, batches, loss = tiny
    config = PruningConfig(pruning_strategy=name, pruning_scope=scope, fc_rate=0.5)
    kinds = pruning.layer_kinds(wrapped)
    assert kinds == {"fc1": "fc", "out": "fc"}
    before = pruning.snapshot(wrapped)
    current = pruning.get_masks(wrapped)
    masks = S.prune(config, PruneInputs(kinds=kinds, kernels=pruning.get_kernels(wrapped), masks=current, level=2,
                                        seed=0, model=wrapped, batches=batches, loss=loss))
    # fc1 keeps 0.5**2 of 24 = 6; the output keeps 0.75**2 of 18 = 10.125 -> 10; globally the pool is fc1 alone.
    assert {n: int(np.count_nonzero(m)) for n, m in masks.items()} == {"fc1": 6, "out": 10}
    assert S.expected_counts(config, kinds, {"fc1": 24, "out": 18}, 2)["layers"]["out"] == 10
    assert all(set(np.unique(m)) <= {0.0, 1.0} and m.dtype == f32 for m in masks.values())
    assert M.is_subset(masks, current)
    for kept, value in zip(before, pruning.snapshot(wrapped)):  # scoring leaves the model as it was
        np.testing.assert_array_equal(kept, value)
    assert_masks_equal(pruning.get_masks(wrapped), current)


def test_magnitude_init_on_the_wrapped_model_keeps_the_largest_initial_weights(tiny):
    from tf_lottery.masking import pruning

    wrapped, _, _ = tiny
    kernels = pruning.get_kernels(wrapped)
    masks = S.prune(PruningConfig(pruning_strategy="magnitude_init", fc_rate=0.5),
                    PruneInputs(kinds=pruning.layer_kinds(wrapped), kernels=kernels, masks=ones(kernels), level=1, seed=0))
    smallest_kept = np.min(np.abs(kernels["fc1"])[masks["fc1"] == 1])
    largest_pruned = np.max(np.abs(kernels["fc1"])[masks["fc1"] == 0])
    assert smallest_kept > largest_pruned


# -- score inversion and GraSP by magnitude (Frankle et al. 2021) -----------------------------------


def test_inversion_keeps_the_lowest_scores_with_the_same_counts_by_hand():
    config = PruningConfig(**HALF)
    # conv keeps 2 of 4: the two smallest magnitudes (-0.1, 0.05); fc keeps 5 of 6: all but 0.7; out 2 of 4.
    inverted = S.prune(config, inputs(SCORES), invert=True)
    assert_masks_equal(inverted, {"conv": arr([[0, 1], [0, 1]]), "fc": arr([0, 1, 1, 1, 1, 1]), "out": arr([0, 0, 1, 1])})
    ticket = S.prune(config, inputs(SCORES))
    assert all(int(inverted[n].sum()) == int(ticket[n].sum()) for n in SCORES)
    # Iteratively, inversion keeps the lowest among the survivors of the current mask.
    second = S.prune(config, inputs(SCORES, level=2, current=inverted), invert=True)
    assert M.is_subset(second, inverted)
    assert_masks_equal(second, {"conv": arr([[0, 0], [0, 1]]), "fc": arr([0, 0, 1, 1, 1, 1]), "out": arr([0, 0, 0, 1])})


def test_inversion_of_a_global_and_of_a_signed_ranking_by_hand(monkeypatch):
    # Global pool (conv + fc, 10 weights) keeps 5 at conv's rate 0.5: the five smallest magnitudes.
    config = PruningConfig(pruning_scope="global", **HALF)
    inverted = S.prune(config, inputs(SCORES), invert=True)
    assert_masks_equal(inverted, {"conv": arr([[0, 1], [0, 1]]), "fc": arr([0, 0, 0, 1, 1, 1]), "out": arr([0, 0, 1, 1])})
    module = importlib.import_module(S._MODULES["grasp"])
    hand = {"a": arr([-0.9, 0.1]), "b": arr([0.5, -0.2]), "out": arr([0.3, -0.4])}
    monkeypatch.setattr(module, "STRATEGY", dataclasses.replace(module.STRATEGY, scores=lambda _: hand))
    kinds = {"a": "fc", "b": "fc", "out": "fc"}
    signed = PruningConfig(pruning_strategy="grasp", fc_rate=0.5, output_rate=0.5)
    # Signed scores inverted: the lowest score (-0.9, -0.2, -0.4), not the smallest magnitude.
    assert_masks_equal(S.prune(signed, inputs({n: np.zeros_like(v) for n, v in hand.items()}, kinds=kinds), invert=True),
                       {"a": arr([1, 0]), "b": arr([0, 1]), "out": arr([0, 1])})


def test_inversion_is_refused_at_a_structured_granularity():
    config = PruningConfig(granularity="block", **HALF)
    with pytest.raises(ValueError, match="^the inverted control needs granularity=weight, not 'block'$"):
        S.select(config, SCORES, ones(SCORES), MIXED, 1, invert=True)


def test_grasp_magnitude_ranks_the_magnitude_of_graspss_scores(tiny):
    from tf_lottery.masking import pruning, scoring

    wrapped, batches, loss = tiny
    kinds, kernels = pruning.layer_kinds(wrapped), pruning.get_kernels(wrapped)
    scores = scoring.grasp_scores(wrapped, batches, loss)
    config = PruningConfig(pruning_strategy="grasp_magnitude", fc_rate=0.5)
    prune_inputs = PruneInputs(kinds=kinds, kernels=kernels, masks=ones(kernels), level=1, seed=0,
                               model=wrapped, batches=batches, loss=loss)
    masks = S.prune(config, prune_inputs)
    for name in kinds:
        magnitude = np.abs(scores[name])
        assert np.min(magnitude[masks[name] == 1]) >= np.max(magnitude[masks[name] == 0]), name
    signed = S.prune(dataclasses.replace(config, pruning_strategy="grasp"), prune_inputs)
    # The tiny network has large negative GraSP scores: the signed ranking prunes them, the magnitude keeps them.
    assert any(not np.array_equal(masks[n], signed[n]) for n in kinds)
    kept_negative = sum(int(np.sum((scores[n] < 0) & (masks[n] == 1))) for n in kinds)
    assert kept_negative > sum(int(np.sum((scores[n] < 0) & (signed[n] == 1))) for n in kinds)


# -- global_all: every layer ranked together (the pruning-at-initialization papers) --------------------


def test_global_all_pools_the_output_layer_too_by_hand():
    config = PruningConfig(pruning_scope="global_all", **HALF)
    # All 14 weights ranked together at conv's rate 0.5: the 7 largest magnitudes are kept,
    # 0.9, 0.8, 0.7, 0.6, 0.5, 0.4 and 0.3 (fc's 0.3 and out's -0.3 tie: the earlier layer is pruned first).
    masks = S.select(config, SCORES, ones(SCORES), MIXED, 1)
    assert_masks_equal(masks, {"conv": arr([[1, 0], [1, 0]]), "fc": arr([1, 1, 1, 0, 0, 0]), "out": arr([1, 1, 0, 0])})
    assert S.pool_layers(config, MIXED) == ["conv", "fc", "out"]
    expected = S.expected_counts(config, MIXED, SIZES, 1)
    assert expected["layers"] == {} and expected["pool"] == ["conv", "fc", "out"]
    assert expected["pool_range"][0] == 7
    assert S.pool_layers(PruningConfig(pruning_scope="global", **HALF), MIXED) == ["conv", "fc"]


def test_an_at_init_strategy_off_its_papers_scope_says_so_in_one_line():
    for scope in ("layerwise", "global"):
        line = S.scope_warning(PruningConfig(pruning_strategy="snip", pruning_scope=scope))
        assert line.startswith(f"warning: pruning_strategy=snip with pruning_scope={scope} ")
        assert line.endswith("its paper ranks every layer together: pruning_scope=global_all") and "\n" not in line
    assert S.scope_warning(PruningConfig(pruning_strategy="snip", pruning_scope="global_all")) is None
    assert S.scope_warning(PruningConfig(pruning_strategy="magnitude")) is None
