"""Branches (tf_lottery.branches): the registry, the stage seeds old runs depend on, and where each
branch starts from the ticket's masks and rewind weights (on a tiny wrapped tf_keras model)."""

import importlib
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tf_lottery import branches as B
from tf_lottery.masking import masks as M
from tf_lottery.branches import BranchInputs

f32 = np.float32
NAMES = ["main", "random_reinit", "random_prune", "sign_reinit", "inverted"]
# Every stage's random numbers (and so the results of runs already on disk) depend on these.
OFFSETS = {"main": 0, "random_reinit": 1, "random_prune": 2, "sign_reinit": 3, "inverted": 4}
PRIME = 2**31 - 1


# -- the registry ----------------------------------------------------------------------------------


def test_names_put_the_ticket_first():
    assert B.names() == NAMES
    assert B.MAIN == "main"


def test_controls_are_every_branch_but_the_ticket():
    assert B.controls() == NAMES[1:]


def test_an_unknown_control_is_one_line_listing_the_controls():
    with pytest.raises(ValueError) as info:
        B.get("reinit")
    assert str(info.value) == "unknown control 'reinit'; allowed: random_reinit, random_prune, sign_reinit, inverted"


def test_every_branch_module_is_registered_under_its_branchs_name():
    folder = os.path.dirname(B.__file__)
    files = {name[:-3] for name in os.listdir(folder) if name.endswith(".py")} - {"base", "__init__"}
    assert set(B._MODULES.values()) == {f"tf_lottery.branches.{name}" for name in files}
    for name, module in B._MODULES.items():
        branch = importlib.import_module(module).BRANCH
        assert isinstance(branch, B.Branch)
        assert branch.name == name
        assert B.get(name) is branch
        assert branch.label and branch.description


def test_seed_offsets_are_pinned_and_distinct():
    assert {name: B.get(name).seed_offset for name in NAMES} == OFFSETS
    # Below 10, so that round * 10 + offset never collides across rounds.
    assert len(set(OFFSETS.values())) == len(OFFSETS) and max(OFFSETS.values()) < 10


# -- stage seeds -----------------------------------------------------------------------------------


def test_stage_seed_by_hand():
    assert B.stage_seed(0, 0, "main") == 0
    assert B.stage_seed(0, 1, "random_reinit") == 11
    assert B.stage_seed(7, 3, "random_prune") == 7 * 1009 + 30 + 2
    assert B.stage_seed(2**32 - 1, 0, "main") == 1009  # 2**32 - 1 = 2 * (2**31 - 1) + 1
    assert B.stage_seed(2**32 - 1, 2, "sign_reinit") == 1009 + 23


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 200))
def test_stage_seed_is_the_formula_and_distinct_per_branch(seed, round_index):
    seeds = {name: B.stage_seed(seed, round_index, name) for name in NAMES}
    for name, value in seeds.items():
        assert value == (seed * 1009 + round_index * 10 + OFFSETS[name]) % PRIME
        assert 0 <= value < PRIME
    assert len(set(seeds.values())) == len(NAMES)


def test_stage_seed_of_an_unknown_branch_is_refused():
    with pytest.raises(ValueError, match="unknown control 'foo'"):
        B.stage_seed(0, 0, "foo")


# -- random pruning --------------------------------------------------------------------------------

TICKET = {
    "fc1": np.array([[1, 0, 0, 1, 0], [0, 1, 0, 0, 1], [1, 1, 0, 0, 0], [0, 0, 0, 0, 1]], f32),
    "out": np.array([1, 0, 1, 1, 0, 0, 0, 1], f32),
}


def test_random_prune_keeps_each_layers_count_and_the_rewind_weights():
    weights = [np.ones(3, f32), np.zeros(2, f32)]
    masks, values = B.get("random_prune").start(BranchInputs(masks=TICKET, weights=weights, model=None, seed=4))
    assert values is weights
    assert list(masks) == list(TICKET)
    for name, mask in masks.items():
        assert mask.shape == TICKET[name].shape and mask.dtype == f32
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert np.count_nonzero(mask) == np.count_nonzero(TICKET[name])


def test_random_prune_is_reproducible_by_seed():
    start = B.get("random_prune").start
    first, _ = start(BranchInputs(masks=TICKET, weights=[], model=None, seed=4))
    again, _ = start(BranchInputs(masks=TICKET, weights=[], model=None, seed=4))
    other, _ = start(BranchInputs(masks=TICKET, weights=[], model=None, seed=5))
    expected = M.random_masks(TICKET, np.random.default_rng(4))
    for name in TICKET:
        np.testing.assert_array_equal(first[name], again[name])
        np.testing.assert_array_equal(first[name], expected[name])
    assert any(not np.array_equal(first[n], other[n]) for n in TICKET)


def test_the_ticket_starts_from_its_own_masks_and_weights():
    weights = [np.ones(3, f32)]
    masks, values = B.get("main").start(BranchInputs(masks=TICKET, weights=weights, model=None, seed=0))
    assert masks is TICKET and values is weights


# -- re-initialization on a tiny wrapped model -----------------------------------------------------


@pytest.fixture(scope="module")
def ticket():
    """A wrapped 3-5-(batch norm)-4 network, a ticket mask of it, and rewind weights with non-zero biases."""
    import tf_keras as keras

    from tf_lottery.masking import pruning

    init = keras.initializers.GlorotNormal
    model = keras.Sequential([
        keras.Input((3,)),
        keras.layers.Dense(5, kernel_initializer=init(seed=1), name="fc1"),
        keras.layers.BatchNormalization(name="norm"),
        keras.layers.Dense(4, kernel_initializer=init(seed=2), name="out"),
    ])
    wrapped = pruning.wrap(model)
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=shape).astype(f32) for shape in pruning.shapes(wrapped)]
    positions = pruning.kernel_positions(wrapped)
    weights[positions["fc1"]][0, :2] = 0.0  # a few weights the rewind point holds at exactly 0
    masks = {name: (rng.random(weights[pos].shape) < 0.6).astype(f32) for name, pos in positions.items()}
    return wrapped, masks, weights, positions


def start(name, ticket, seed):
    wrapped, masks, weights, _ = ticket
    before = [w.copy() for w in weights]
    result = B.get(name).start(BranchInputs(masks=masks, weights=weights, model=wrapped, seed=seed))
    for kept, value in zip(before, weights):  # the ticket's own weights are not touched
        np.testing.assert_array_equal(kept, value)
    return result


def test_the_tiny_model_has_kernels_and_other_weights(ticket):
    wrapped, masks, weights, positions = ticket
    assert sorted(positions) == ["fc1", "out"]
    assert len(weights) == 8  # 2 kernels, 2 biases, 4 batch-norm tensors
    assert sorted(masks) == ["fc1", "out"]


@pytest.mark.parametrize("name", ["random_reinit", "sign_reinit"])
def test_reinit_branches_keep_the_masks_and_every_weight_but_the_kernels(ticket, name):
    _, masks, weights, positions = ticket
    new_masks, values = start(name, ticket, seed=3)
    assert new_masks is masks
    assert [v.shape for v in values] == [w.shape for w in weights]
    assert all(v.dtype == f32 for v in values)
    for i, (value, old) in enumerate(zip(values, weights)):
        if i not in positions.values():
            np.testing.assert_array_equal(value, old)


def test_random_reinit_draws_new_kernels_from_the_seed(ticket):
    from tf_lottery.masking import pruning

    wrapped, _, weights, positions = ticket
    _, values = start("random_reinit", ticket, seed=3)
    _, again = start("random_reinit", ticket, seed=3)
    _, other = start("random_reinit", ticket, seed=4)
    for pos in positions.values():
        assert not np.any(values[pos] == weights[pos])
        np.testing.assert_array_equal(values[pos], again[pos])
        assert not np.any(values[pos] == other[pos])
    # The new kernels do not depend on the rewind kernels' values, only on the seed.
    shifted = [w + 1.0 for w in weights]
    _, from_shifted = B.get("random_reinit").start(BranchInputs(masks={}, weights=shifted, model=wrapped, seed=3))
    for pos in positions.values():
        np.testing.assert_array_equal(from_shifted[pos], values[pos])
    fresh = pruning.reinitialized(wrapped, weights, 3)
    for pos in positions.values():
        np.testing.assert_array_equal(values[pos], fresh[pos])


def test_random_reinit_draws_each_kernel_from_its_layers_initializer_seeded_by_the_stage(ticket):
    import tf_keras as keras

    _, _, weights, positions = ticket
    _, values = start("random_reinit", ticket, seed=3)
    for index, name in enumerate(["fc1", "out"]):  # seed * 1009 + the kernel's index, as runs on disk were drawn
        pos = positions[name]
        expected = keras.initializers.GlorotNormal(seed=3 * 1009 + index)(weights[pos].shape, dtype="float32")
        np.testing.assert_array_equal(values[pos], expected.numpy(), err_msg=name)


def test_sign_reinit_keeps_the_signs_with_fresh_magnitudes(ticket):
    from tf_lottery.masking import pruning

    wrapped, _, weights, positions = ticket
    _, values = start("sign_reinit", ticket, seed=3)
    fresh = pruning.reinitialized(wrapped, weights, 3)
    for name, pos in positions.items():
        old, new = weights[pos], values[pos]
        nonzero = old != 0
        np.testing.assert_array_equal(np.sign(new[nonzero]), np.sign(old[nonzero]), err_msg=name)
        np.testing.assert_array_equal(np.abs(new[nonzero]), np.abs(fresh[pos][nonzero]), err_msg=name)
        assert not np.any(np.abs(new[nonzero]) == np.abs(old[nonzero]))
        np.testing.assert_array_equal(new[~nonzero], 0.0)
    assert np.count_nonzero(weights[positions["fc1"]] == 0) == 2
    _, other = start("sign_reinit", ticket, seed=4)
    assert not np.array_equal(other[positions["fc1"]], values[positions["fc1"]])


def test_the_inverted_control_starts_from_the_drivers_inverted_masks_and_the_tickets_weights():
    ticket = {"fc": np.array([1, 1, 0, 0], f32)}
    inverted = {"fc": np.array([0, 0, 1, 1], f32)}
    weights = [np.arange(4, dtype=f32)]
    masks, start = B.get("inverted").start(BranchInputs(ticket, weights, None, 0, inverted=lambda: inverted))
    assert masks is inverted and start is weights


def test_the_inverted_control_without_the_levels_scores_is_one_line():
    with pytest.raises(ValueError) as info:
        B.get("inverted").start(BranchInputs({"fc": np.ones(2, f32)}, [], None, 0))
    assert "\n" not in str(info.value) and str(info.value).startswith("the inverted control needs the level's scores")
