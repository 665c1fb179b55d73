"""LotteryCallback in a user's own model.fit loop: one fit per round, the same pruning function as the driver."""

import numpy as np
import pytest
import tf_keras as keras

import tf_lottery
import tf_lottery_models as zoo
from tf_lottery import config as C
from tf_lottery.masking import masks as mask_math
from tf_lottery.masking import pruning
from tf_lottery import strategies

from fashion_slices import as_float, fashion_slice

SIZES = {"fc1": 784 * 300, "fc2": 300 * 100, "output": 100 * 10}
RATES = {"fc1": 0.2, "fc2": 0.2, "output": 0.1}


@pytest.fixture(scope="module")
def data():
    splits = fashion_slice(train=1200, validation=1, test=200)
    return as_float(splits.train_images), splits.train_labels


class Capture(keras.callbacks.Callback):
    """Snapshots the model at a given iteration, at the start of every fit (after the lottery
    callback's own start) and at its end."""

    def __init__(self, iteration=None):
        super().__init__()
        self.iteration, self.at_iteration, self.at_start, self.at_end = iteration, None, [], []

    def on_train_begin(self, logs=None):
        self.at_start.append((pruning.get_masks(self.model), pruning.snapshot(self.model)))

    def on_train_batch_end(self, batch, logs=None):
        if self.iteration and int(self.model.optimizer.iterations.numpy()) == self.iteration and self.at_iteration is None:
            self.at_iteration = pruning.snapshot(self.model)

    def on_train_end(self, logs=None):
        self.at_end.append((pruning.get_kernels(self.model), pruning.snapshot(self.model)))


def user_loop(data, rounds=3, rewind_step=0, capture_iteration=None):
    """What a user writes: wrap, compile once, then one fit per round with the callback."""
    images, labels = data
    model = tf_lottery.wrap(zoo.get_builder("lenet_300_100")((28, 28, 1), seed=3))
    theta_0 = pruning.snapshot(model)
    lottery = tf_lottery.LotteryCallback(fc_rate=0.2, rewind_step=rewind_step)
    capture = Capture(capture_iteration)
    model.compile(keras.optimizers.Adam(1.2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    for _ in range(rounds):
        model.fit(images, labels, batch_size=60, epochs=1, callbacks=[lottery, capture], verbose=0)
    return model, theta_0, lottery, capture


def survivors_equal(model, values, reference, masks):
    positions = pruning.kernel_positions(model)
    for name, pos in positions.items():
        if not np.array_equal(values[pos], reference[pos] * masks[name]):
            return False
    others = set(range(len(values))) - set(positions.values())
    return all(np.array_equal(values[i], reference[i]) for i in others)


def test_each_fit_trains_one_round_pruned_per_rate_and_rewound_to_theta_0(data):
    model, theta_0, lottery, capture = user_loop(data)
    assert lottery.level == 2  # rounds 0, 1, 2 trained
    for level, (masks, weights) in enumerate(capture.at_start):
        for name, size in SIZES.items():
            kept = int(np.count_nonzero(masks[name]))
            assert kept == mask_math.keep_count(size, (1 - RATES[name]) ** level)
        # each fit starts at theta_0 on the survivors, 0 elsewhere, bit for bit
        assert survivors_equal(model, weights, theta_0, masks)
    for (earlier, _), (later, _) in zip(capture.at_start, capture.at_start[1:]):
        assert mask_math.is_subset(later, earlier)
    # after fit the model holds that round's trained network, as Keras leaves any model
    assert all(np.array_equal(a, b) for a, b in zip(pruning.snapshot(model), capture.at_end[-1][1]))
    assert not survivors_equal(model, pruning.snapshot(model), theta_0, capture.at_start[-1][0])
    assert all(np.array_equal(a, b) for a, b in zip(lottery.rewind_weights, theta_0))


def test_the_callback_prunes_with_the_drivers_pure_function(data):
    model, _, lottery, capture = user_loop(data, rounds=2)
    kernels = capture.at_end[0][0]
    config = C.PruningConfig(fc_rate=0.2)
    inputs = strategies.PruneInputs(kinds=pruning.layer_kinds(model), kernels=kernels,
                                    masks=capture.at_start[0][0], level=1, seed=0)
    want = strategies.prune(config, inputs)
    for name in want:
        np.testing.assert_array_equal(capture.at_start[1][0][name], want[name])


def test_rewind_step_records_the_weights_at_iteration_k(data):
    k = 7
    model, theta_0, lottery, capture = user_loop(data, rounds=2, rewind_step=k, capture_iteration=k)
    assert capture.at_iteration is not None
    assert all(np.array_equal(a, b) for a, b in zip(lottery.rewind_weights, capture.at_iteration))
    assert not all(np.array_equal(a, b) for a, b in zip(lottery.rewind_weights, theta_0))
    masks, weights = capture.at_start[1]
    assert survivors_equal(model, weights, capture.at_iteration, masks)
    assert not lottery._implements_train_batch_hooks()  # recorded: no more per-batch hooks


def test_after_rewinding_to_k_the_step_counter_and_its_schedule_resume_at_k(data):
    """Weight rewinding resets the learning-rate schedule to k with the weights (Frankle et al.
    2020), as find_ticket's schedule_start does: a schedule keyed on optimizer.iterations must see k."""
    images, labels = data
    k = 7
    model = tf_lottery.wrap(zoo.get_builder("lenet_300_100")((28, 28, 1), seed=3))
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([k], [0.01, 0.001])
    model.compile(keras.optimizers.SGD(schedule, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    steps = []

    class Steps(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):  # after the lottery callback's own start
            steps.append(int(self.model.optimizer.iterations.numpy()))

    lottery = tf_lottery.LotteryCallback(rewind_step=k)
    for _ in range(3):
        model.fit(images, labels, batch_size=60, epochs=1, callbacks=[lottery, Steps()], verbose=0)
    assert steps == [0, k, k]  # round 0 from 0; every later round from k (fresh momentum, schedule at k)
    lottery = tf_lottery.LotteryCallback()  # rewinding to theta_0: every round from 0
    model = tf_lottery.wrap(zoo.get_builder("lenet_300_100")((28, 28, 1), seed=3))
    model.compile(keras.optimizers.SGD(schedule), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    steps.clear()
    for _ in range(2):
        model.fit(images, labels, batch_size=60, epochs=1, callbacks=[lottery, Steps()], verbose=0)
    assert steps == [0, 0]


def test_a_rewind_step_never_reached_is_one_line(data):
    images, labels = data
    model = tf_lottery.wrap(zoo.get_builder("lenet_300_100")((28, 28, 1), seed=3))
    model.compile(keras.optimizers.Adam(1.2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = tf_lottery.LotteryCallback(rewind_step=10_000)
    model.fit(images, labels, batch_size=60, epochs=1, callbacks=[callback], verbose=0)
    with pytest.raises(ValueError, match=r"rewind_step=10000 was never reached.*iteration 20") as info:
        model.fit(images, labels, batch_size=60, epochs=1, callbacks=[callback], verbose=0)
    assert "\n" not in str(info.value)
    cfg = C.override(tf_lottery.from_preset("lenet_300_100", "fast"), iterations=20, epochs=None, eval_every=20, rounds=2,
                     rewind_step=20)
    with pytest.raises(ValueError, match=r"rewind_step=20 is past the end.*0 <= rewind_step < 20") as info:
        tf_lottery.find_ticket(config=cfg, splits=fashion_slice(train=1200, validation=100, test=200), log=lambda s: None)
    assert "\n" not in str(info.value)


def test_bad_callback_arguments_raise_one_line_naming_the_field():
    for kwargs, pattern in [
        ({"fc_rate": 1.0}, "fc_rate=1.0"),
        ({"pruning_scope": "per_neuron"}, "pruning_scope 'per_neuron'"),
        ({"schedule": "cubic"}, "schedule 'cubic'"),
        ({"pruning_strategy": "snip"}, "needs data"),
        ({"pruning_strategy": "nope"}, "pruning_strategy 'nope'"),
    ]:
        with pytest.raises(ValueError, match=pattern) as info:
            tf_lottery.LotteryCallback(**kwargs)
        assert "\n" not in str(info.value)
    for retrain in ("lr_rewind", "finetune"):  # the callback rewinds weights: it would do that silently
        with pytest.raises(ValueError, match=f"retrain='{retrain}': LotteryCallback rewinds .*allowed: retrain='weight_rewind'"):
            tf_lottery.LotteryCallback(config=C.PruningConfig(retrain=retrain))


def test_rates_before_fit_by_kind_and_per_layer_with_a_model():
    lottery = tf_lottery.LotteryCallback(fc_rate=0.3, conv_rate=0.15)
    assert lottery.rates() == {"fc": 0.3, "conv": 0.15, "output": None}
    model = tf_lottery.wrap(zoo.get_builder("conv2")((28, 28, 1), seed=0))
    assert lottery.rates(model) == {"conv1": 0.15, "conv2": 0.15, "fc1": 0.3, "fc2": 0.3, "output": 0.15}


def test_controls_in_the_callback_path(data):
    model, _, lottery, capture = user_loop(data, rounds=2)
    masks = capture.at_start[1][0]
    for name in ("random_reinit", "random_prune", "sign_reinit"):
        control = tf_lottery.wrap(zoo.get_builder("lenet_300_100")((28, 28, 1), seed=9))
        lottery.apply_control(name, control)
        got = pruning.get_masks(control)
        counts = {n: int(np.count_nonzero(m)) for n, m in got.items()}
        assert counts == {n: int(np.count_nonzero(m)) for n, m in masks.items()}
        assert pruning.count_pruned_nonzero(control) == 0
        same_masks = all(np.array_equal(got[n], masks[n]) for n in masks)
        assert same_masks == (name != "random_prune")
    with pytest.raises(ValueError, match="unknown control 'nope'"):
        lottery.apply_control("nope", control)


@pytest.mark.parametrize("pruning_strategy", ["magnitude", "random"])
def test_the_callback_and_find_ticket_give_the_same_masks(pruning_strategy):
    """One mask step, one seed rule: fed find_ticket's trained kernels of each round, the callback
    prunes to find_ticket's next mask (random pruning shows the seeds agree, magnitude the rule)."""
    seed = 7
    cfg = C.override(tf_lottery.from_preset("lenet_300_100", "fast"), iterations=20, epochs=None, eval_every=20, rounds=3,
                     seed=seed, pruning_strategy=pruning_strategy)
    ticket = tf_lottery.find_ticket(config=cfg, splits=fashion_slice(train=1200, validation=100, test=200),
                                    log=lambda s: None)
    model = tf_lottery.wrap(zoo.get_builder("lenet_300_100")((28, 28, 1), seed=seed))
    callback = tf_lottery.LotteryCallback(config=cfg.pruning, seed=seed)
    callback.set_model(model)
    callback.on_train_begin()
    for level in (1, 2):
        pruning.restore(model, pruning.snapshot(ticket.trained_model(level - 1, strip=False)))
        callback.on_train_end()
        callback.on_train_begin()  # the next fit: prune to `level`
        for name, mask in ticket.round_masks[level].items():
            np.testing.assert_array_equal(pruning.get_masks(model)[name], mask, err_msg=f"{name} at level {level}")
