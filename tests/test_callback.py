"""LotteryCallback in a user's own model.fit loop: the same callback the driver uses."""

import dataclasses

import tf_lottery  # first: it selects tf-keras before TensorFlow loads
import numpy as np
import pytest
import tf_keras as keras

import tf_lottery_models as zoo
from tf_lottery import callbacks as callbacks_lib
from tf_lottery import config as C
from tf_lottery import lottery
from tf_lottery import masks as mask_math
from tf_lottery import pruning

from fashion_slices import as_float, fashion_slice

SIZES = {"fc1": 784 * 300, "fc2": 300 * 100, "output": 100 * 10}
RATES = {"fc1": 0.2, "fc2": 0.2, "output": 0.1}


@pytest.fixture(scope="module")
def data():
    splits = fashion_slice(train=1200, validation=0, test=200)
    return as_float(splits.train_images), splits.train_labels


class Capture(keras.callbacks.Callback):
    """Snapshots the model at a given iteration and at the start of every fit."""

    def __init__(self, iteration):
        super().__init__()
        self.iteration, self.at_iteration, self.at_start = iteration, None, []

    def on_train_begin(self, logs=None):
        self.at_start.append(pruning.snapshot(self.model))

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.iteration and self.at_iteration is None:
            self.at_iteration = pruning.snapshot(self.model)


def user_loop(data, rounds=3, rewind_step=0, capture_iteration=0):
    """What a user writes: wrap, then per round a fresh masked Adam, compile, fit with the callback."""
    images, labels = data
    model = tf_lottery.wrap(zoo.get_builder("lenet_300_100")((28, 28, 1), seed=3))
    theta_0 = pruning.snapshot(model)
    ticket_callback = tf_lottery.LotteryCallback(fc_rate=0.2, rewind_step=rewind_step)
    capture = Capture(capture_iteration)
    masks, starts = [], []
    for _ in range(rounds):
        model.compile(
            optimizer=tf_lottery.masked_optimizer(keras.optimizers.Adam(1.2e-3), model),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        model.fit(images, labels, batch_size=60, epochs=1, callbacks=[ticket_callback, capture], verbose=0)
        masks.append(pruning.get_masks(model))
        starts.append(pruning.snapshot(model))
    return model, theta_0, ticket_callback, capture, masks, starts


def survivors_equal(model, values, reference, masks):
    positions = pruning.kernel_positions(model)
    for name, pos in positions.items():
        if not np.array_equal(values[pos], reference[pos] * masks[name]):
            return False
    others = set(range(len(values))) - set(positions.values())
    return all(np.array_equal(values[i], reference[i]) for i in others)


def test_user_fit_loop_prunes_per_rate_and_rewinds_to_theta_0(data):
    model, theta_0, ticket_callback, capture, masks, after = user_loop(data)
    assert ticket_callback.level == 3
    assert ticket_callback.rewind_weights is not None
    for level, (level_masks, weights) in enumerate(zip(masks, after), start=1):
        for name, size in SIZES.items():
            kept = int(np.count_nonzero(level_masks[name]))
            assert kept == mask_math.keep_count(size, (1 - RATES[name]) ** level)
            assert abs(kept - size * (1 - RATES[name]) ** level) <= 1
        # after each fit the model is at theta_0 on the survivors, 0 elsewhere, bit for bit
        assert survivors_equal(model, weights, theta_0, level_masks)
    for earlier, later in zip(masks, masks[1:]):
        assert mask_math.is_subset(later, earlier)
    # each round's fit started exactly where the previous round was rewound to
    for start, previous in zip(capture.at_start[1:], after):
        assert all(np.array_equal(a, b) for a, b in zip(start, previous))
    # and the rewind point is theta_0 itself
    assert all(np.array_equal(a, b) for a, b in zip(ticket_callback.rewind_weights, theta_0))


def test_rewind_step_records_the_weights_at_iteration_k(data):
    k = 7
    model, theta_0, ticket_callback, capture, masks, after = user_loop(data, rounds=2, rewind_step=k, capture_iteration=k)
    assert capture.at_iteration is not None
    assert all(np.array_equal(a, b) for a, b in zip(ticket_callback.rewind_weights, capture.at_iteration))
    assert not all(np.array_equal(a, b) for a, b in zip(ticket_callback.rewind_weights, theta_0))
    for level_masks, weights in zip(masks, after):
        assert survivors_equal(model, weights, capture.at_iteration, level_masks)
    # once recorded, the callback stops paying for per-batch hooks
    assert not ticket_callback._implements_train_batch_hooks()


def test_a_rewind_step_past_the_end_raises_one_line(data):
    images, labels = data
    model = tf_lottery.wrap(zoo.get_builder("lenet_300_100")((28, 28, 1), seed=3))
    model.compile(
        optimizer=tf_lottery.masked_optimizer(keras.optimizers.Adam(1.2e-3), model),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    callback = tf_lottery.LotteryCallback(rewind_step=10_000)
    with pytest.raises(ValueError, match=r"rewind_step=10000 was never reached.*iteration 20") as info:
        model.fit(images, labels, batch_size=60, epochs=1, callbacks=[callback], verbose=0)
    assert "\n" not in str(info.value)
    # the driver refuses it before training, naming the allowed range
    cfg = C.from_preset("lenet_300_100", "fast")
    cfg = dataclasses.replace(
        cfg,
        training=dataclasses.replace(cfg.training, iterations=20, eval_every=20),
        pruning=dataclasses.replace(cfg.pruning, rounds=2, rewind_step=20),
    )
    with pytest.raises(ValueError, match=r"rewind_step=20 is past the end.*0 <= rewind_step < 20") as info:
        tf_lottery.find_ticket(config=cfg, splits=fashion_slice(train=1200, validation=0, test=200), log=lambda s: None)
    assert "\n" not in str(info.value)


def test_an_optimizer_that_does_not_mask_gradients_is_refused(data):
    # tf_lottery.wrap leaves pruned weights to the masked optimizer (no per-step re-masking).
    images, labels = data
    model = tf_lottery.wrap(zoo.get_builder("lenet_300_100")((28, 28, 1), seed=3))
    model.compile(optimizer=keras.optimizers.Adam(1.2e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match=r"optimizer Adam does not mask.*masked_optimizer") as info:
        model.fit(images, labels, batch_size=60, epochs=1, callbacks=[tf_lottery.LotteryCallback()], verbose=0)
    assert "\n" not in str(info.value)
    # a masked optimizer built for another model does not count either
    other = tf_lottery.wrap(zoo.get_builder("lenet_300_100")((28, 28, 1), seed=4))
    model.compile(optimizer=tf_lottery.masked_optimizer(keras.optimizers.Adam(1.2e-3), other), loss="mse")
    with pytest.raises(ValueError, match="does not mask"):
        model.fit(images, labels, batch_size=60, epochs=1, callbacks=[tf_lottery.LotteryCallback()], verbose=0)


def test_bad_callback_arguments_raise_one_line():
    for kwargs, pattern in [
        ({"fc_rate": 1.0}, "fc_rate=1.0"),
        ({"scope": "per_neuron"}, "per_neuron"),
        ({"schedule": "cubic"}, "cubic"),
    ]:
        with pytest.raises(ValueError, match=pattern) as info:
            tf_lottery.LotteryCallback(**kwargs)
        assert "\n" not in str(info.value)


def test_the_driver_uses_the_same_callback(monkeypatch):
    assert tf_lottery.LotteryCallback is callbacks_lib.LotteryCallback is lottery.LotteryCallback
    calls = []
    original = callbacks_lib.LotteryCallback.end_round

    def counting(self):
        calls.append(self)
        return original(self)

    monkeypatch.setattr(callbacks_lib.LotteryCallback, "end_round", counting)
    cfg = C.from_preset("lenet_300_100", "fast")
    cfg = dataclasses.replace(
        cfg,
        training=dataclasses.replace(cfg.training, iterations=20, eval_every=20),
        pruning=dataclasses.replace(cfg.pruning, rounds=3),
    )
    ticket = tf_lottery.find_ticket(config=cfg, splits=fashion_slice(train=1200, validation=0, test=200), log=lambda s: None)
    assert len(calls) == 2 and calls[0] is calls[1]  # one callback, pruning after rounds 0 and 1
    assert isinstance(calls[0], tf_lottery.LotteryCallback)
    assert calls[0].level == 2 and mask_math.weights_remaining(ticket.masks) < 0.7
