"""The level loop's rules and the round checkpoints, one at a time (issue 21: `levels` and
`checkpoints` were tested only end to end): how long each network trains and from which point of
the schedule, when a search stops early, which masks are refused when read back, which run made by
an older rule is refused, and the checkpoint files' round trip and damage.

A Search here is built on a small Lenet and 300 Fashion-MNIST examples, and nothing is trained.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from fashion_slices import fashion_slice
from tf_lottery import config as C
from tf_lottery.data import inputs as inputs_lib
from tf_lottery.masking import pruning
from tf_lottery.search import building, checkpoints, training
from tf_lottery.search.levels import MAIN, Search
from tf_lottery.search.run_directory import CorruptRunError, RunDirectory

ITERATIONS = 100


def make_search(path, **fields):
    config = C.override(C.ExperimentConfig(), iterations=ITERATIONS, epochs=None, eval_every=50, **fields)
    inputs = inputs_lib.from_config(config, fashion_slice(train=300, validation=100, test=100))
    keras.utils.set_random_seed(0)
    model = pruning.wrap(building.zoo_model(config, (28, 28, 1), 10))
    run = RunDirectory(str(path))
    os.makedirs(run.path, exist_ok=True)
    return Search(model, config, inputs, run, tf.distribute.get_strategy(), training.default_objective(model, False),
                  log=lambda line: None)


@pytest.mark.parametrize("retrain", ["weight_rewind", "lr_rewind", "finetune"])
def test_how_long_each_network_trains_and_where_its_schedule_starts(tmp_path, retrain):
    search = make_search(tmp_path / "run", rewind_step=30, retrain=retrain, controls=("random_reinit",))
    assert search.total == ITERATIONS
    # Round 0 trains T from theta_0 with the schedule at 0; every later network the T - k left.
    assert (search.stage_iterations(0, MAIN), search.schedule_start(0, MAIN)) == (ITERATIONS, 0)
    assert search.stage_iterations(2, MAIN) == ITERATIONS - 30
    assert search.stage_iterations(2, "random_reinit") == ITERATIONS - 30
    # The ticket's schedule continues from k, except fine-tuning, which holds the final rate (T).
    assert search.schedule_start(2, MAIN) == {"weight_rewind": 30, "lr_rewind": 30, "finetune": ITERATIONS}[retrain]
    assert search.schedule_start(2, "random_reinit") == 30  # a control always rewinds


def test_a_search_stops_when_later_rounds_would_prune_nothing(tmp_path):
    # fc_rate 0.9 from 300x100 and 100x10 kernels: each round keeps a tenth; the layers reach 1 weight.
    search = make_search(tmp_path / "run", rounds=12, fc_rate=0.9, output_rate=0.9, keep_one_weight=True)
    stop = search.stop()
    assert stop is not None and stop["after_round"] == search.last_level < 11
    assert stop["reason"].startswith(f"round {search.last_level + 1} and later would prune nothing")
    assert make_search(tmp_path / "other", rounds=3).stop() is None


def test_masks_are_pruned_once_then_read_back(tmp_path):
    search = make_search(tmp_path / "run", rounds=3)
    dense = search.masks(0)
    assert all(np.all(m == 1) for m in dense.values())
    pruning.set_masks(search.model, dense)
    checkpoints.save_round(search.run, 0, search.model)  # round 0 "trained": its initial weights
    first = search.masks(1)
    assert os.path.isfile(search.run.masks_file(1))
    again = search.masks(1)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    counts = search.counts(1)["layers"]
    assert {k: int(v.sum()) for k, v in first.items()} == counts


def test_a_mask_that_revives_a_pruned_weight_is_refused(tmp_path):
    search = make_search(tmp_path / "run", rounds=3)
    pruning.set_masks(search.model, search.masks(0))
    checkpoints.save_round(search.run, 0, search.model)
    level_1 = search.masks(1)
    # Round 2 keeps the right number of weights per layer but one that round 1 pruned.
    level_2 = {k: v.copy() for k, v in level_1.items()}
    for name, mask in level_2.items():
        flat = mask.reshape(-1)
        kept = np.flatnonzero(flat)
        flat[kept[: len(kept) - search.counts(2)["layers"][name]]] = 0
    flat = level_2["fc1"].reshape(-1)
    flat[np.flatnonzero(flat)[0]] = 0
    flat[np.flatnonzero(level_1["fc1"].reshape(-1) == 0)[0]] = 1
    search.run.save_masks(2, level_2)
    with pytest.raises(CorruptRunError, match="keeps weights that round 1 pruned; delete it to recompute"):
        search.load_masks(2)


def test_a_network_trained_by_the_old_rewind_rule_is_refused(tmp_path):
    search = make_search(tmp_path / "run", rounds=3, rewind_step=30)
    os.makedirs(search.run.round_dir(1))
    with open(search.run.stage_file(1, MAIN), "w") as f:
        json.dump({"iterations": ITERATIONS}, f)  # T iterations and no schedule_start: before 0.3
    with pytest.raises(ValueError, match="trained all 100 iterations with the schedule restarted at 0") as info:
        search.check_rewind_rule(1, MAIN)
    assert "\n" not in str(info.value)
    with open(search.run.stage_file(1, MAIN), "w") as f:
        json.dump({"iterations": ITERATIONS - 30, "schedule_start": 30}, f)
    search.check_rewind_rule(1, MAIN)  # today's rule: nothing to refuse


# -- checkpoints -------------------------------------------------------------------------------------
def test_a_round_checkpoint_restores_weights_and_masks(tmp_path):
    search = make_search(tmp_path / "run")
    model, run = search.model, search.run
    masks = {k: (np.random.default_rng(1).random(v.shape) > 0.5).astype(np.float32) for k, v in search.dense_masks().items()}
    pruning.set_masks(model, masks)
    saved = pruning.snapshot(model)
    checkpoints.save_round(run, 3, model)
    pruning.set_masks(model, search.dense_masks())
    pruning.restore(model, [np.zeros_like(w) for w in saved])
    checkpoints.restore_round(run, 3, model)
    assert all(np.array_equal(a, b) for a, b in zip(pruning.snapshot(model), saved))
    restored = pruning.get_masks(model)
    assert all(np.array_equal(restored[k], masks[k]) for k in masks)


def test_a_damaged_checkpoint_is_one_line_with_its_fix(tmp_path):
    search = make_search(tmp_path / "run")
    checkpoints.save_round(search.run, 1, search.model)
    prefix = search.run.checkpoint_prefix(1)
    data = next(p for p in os.listdir(os.path.dirname(prefix)) if ".data-" in p)
    with open(os.path.join(os.path.dirname(prefix), data), "r+b") as f:
        f.truncate(100)
    with pytest.raises(CorruptRunError, match=r"is truncated or corrupted .*; delete .*round_01 to retrain round 1") as info:
        checkpoints.restore_round(search.run, 1, search.model)
    assert "\n" not in str(info.value)
    os.unlink(prefix + ".index")
    with pytest.raises(CorruptRunError, match=r"\.index is missing"):
        checkpoints.check_readable(prefix, "delete it")
