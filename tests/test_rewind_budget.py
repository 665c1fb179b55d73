"""Rewinding to iteration k > 0 trains the T - k iterations left, the schedule continuing from k, as
open_lth and Renda et al. (2020) do: the ticket under every retraining mode, and every control.
A run trained under the old rule (all T iterations, the schedule restarted at 0) is refused."""

import json
import os

import pytest
import tf_keras as keras

import tf_lottery
from tf_lottery import config as C

from fashion_slices import fashion_slice

T, K = 40, 15
RATE = 0.01  # 0.01 for steps 0-9, 0.001 for 10-29, then 0.0001


class Rates(keras.callbacks.Callback):
    """The learning rate each step of each network trained used, one list per fit."""

    def __init__(self):
        super().__init__()
        self.fits = []

    def on_train_begin(self, logs=None):
        self.fits.append([])

    def on_train_batch_end(self, batch, logs=None):
        self.fits[-1].append(float(self.model.optimizer.learning_rate))  # the rate the step just taken used


def _schedule(step):
    """The configured schedule's rate at (0-based) step `step`: it drops 10x at each boundary."""
    return RATE * (0.1 ** sum(step >= b for b in (10, 30)))


def _search(tmp_path, retrain="weight_rewind", rewind_step=K, name="run", callbacks=()):
    cfg = C.override(tf_lottery.from_preset("lenet_300_100", "fast"), iterations=T, epochs=None, eval_every=5,
                     checkpoint_every=0, learning_rate=RATE, lr_boundaries=(10, 30), rounds=2, fc_rate=0.5,
                     rewind_step=rewind_step, retrain=retrain, controls=("random_reinit", "random_prune"))
    return tf_lottery.find_ticket(config=cfg, splits=fashion_slice(train=600, validation=100, test=100),
                                  output_dir=str(tmp_path / name), callbacks=list(callbacks), log=lambda line: None)


@pytest.mark.parametrize("retrain", ["weight_rewind", "lr_rewind"])
def test_a_rewound_round_trains_t_minus_k_iterations_at_the_rates_from_k_on(tmp_path, retrain):
    rates = Rates()
    ticket = _search(tmp_path, retrain, callbacks=[rates])
    dense, *rewound = rates.fits  # round 0, then round 1's ticket and its two controls
    assert len(dense) == T and dense == pytest.approx([_schedule(s) for s in range(T)])
    assert len(rewound) == 3
    for fit in rewound:
        assert len(fit) == T - K
        assert fit == pytest.approx([_schedule(K + s) for s in range(T - K)])
    round_1 = os.path.join(ticket.output_dir, "round_01")
    for stage in ("main", "random_reinit", "random_prune"):
        with open(os.path.join(round_1, f"{stage}.json")) as f:
            result = json.load(f)
        assert result["iterations"] == T - K and result["schedule_start"] == K
        assert result["history"][-1]["iteration"] == T - K


def test_fine_tuning_trains_t_minus_k_at_the_final_rate_and_its_controls_from_k(tmp_path):
    rates = Rates()
    _search(tmp_path, "finetune", callbacks=[rates])
    _, ticket, *controls = rates.fits
    assert ticket == pytest.approx([_schedule(T)] * (T - K))
    for fit in controls:
        assert fit == pytest.approx([_schedule(K + s) for s in range(T - K)])


def test_rewinding_to_0_trains_every_network_t_iterations_from_the_start(tmp_path):
    rates = Rates()
    ticket = _search(tmp_path, rewind_step=0, callbacks=[rates])
    assert all(fit == pytest.approx([_schedule(s) for s in range(T)]) for fit in rates.fits)
    with open(os.path.join(ticket.output_dir, "round_01", "main.json")) as f:
        assert "schedule_start" not in json.load(f)  # k = 0 records what it always did


def test_a_run_trained_under_the_old_rule_is_refused_in_one_line(tmp_path):
    ticket = _search(tmp_path)
    path = os.path.join(ticket.output_dir, "round_01", "random_reinit.json")
    with open(path) as f:
        result = json.load(f)
    result.pop("schedule_start")  # what a network rewound to k trained before 0.3 recorded
    result["iterations"] = T
    with open(path, "w") as f:
        json.dump(result, f)
    before = open(path).read()
    with pytest.raises(ValueError) as e:
        _search(tmp_path)
    message = str(e.value)
    assert "\n" not in message and "rewind_step=15" in message and "use another output_dir" in message
    assert open(path).read() == before
