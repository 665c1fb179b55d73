"""Per-layer pruning rates (`layer_rates`, issue 17: a unit ticket's serving cost is mostly its first
layer's width, its accuracy its last hidden layer's): the setting's spelling and refusals, the
fractions each layer keeps, a real search's counts, the callback's rates, and resume refusals."""

import os

import numpy as np
import pytest
import tf_keras as keras

import tf_lottery
import tf_lottery_models as zoo
from cli_runner import run_find
from fashion_slices import fashion_slice
from tf_lottery import config as C
from tf_lottery import strategies
from tf_lottery.masking import masks as mask_math
from tf_lottery.masking import pruning, unit_graph

LENET = {"fc1": "fc", "fc2": "fc", "output": "fc"}


def test_one_spelling_sorted_by_name_from_a_list_or_a_string():
    assert C.PruningConfig(layer_rates="fc2=0.1, fc1=0.30").layer_rates == ("fc1=0.3", "fc2=0.1")
    assert C.PruningConfig(layer_rates=["fc1=.3", "fc2=0.1"]) == C.PruningConfig(layer_rates="fc2=0.1,fc1=0.3")
    assert C.layer_rate_overrides(C.PruningConfig(layer_rates="fc1=0.3,output=0")) == {"fc1": 0.3, "output": 0.0}
    assert C.PruningConfig().layer_rates == ()


@pytest.mark.parametrize("value, message", [
    ("fc1", "layer_rates item 'fc1' must be NAME=RATE"),
    ("fc1=fast", "layer_rates item 'fc1=fast' must be NAME=RATE"),
    ("=0.2", "layer_rates item '=0.2' must be NAME=RATE"),
    ("fc1=1.0", r"layer_rates fc1=1.0 is outside the allowed range \[0, 1\)"),
    ("fc1=-0.1", r"layer_rates fc1=-0.1 is outside the allowed range"),
    ("fc1=nan", r"layer_rates fc1=nan is outside the allowed range"),
    ("fc1=0.2,fc1=0.3", "layer_rates names layer 'fc1' twice"),
])
def test_a_bad_item_is_one_line_naming_it(value, message):
    with pytest.raises(ValueError, match=message) as info:
        C.PruningConfig(layer_rates=value)
    assert "\n" not in str(info.value)


def test_a_global_scope_has_no_rate_per_layer():
    with pytest.raises(ValueError, match="layer_rates=fc1=0.2 with pruning_scope='global'.*allowed: pruning_scope='layerwise'"):
        C.PruningConfig(layer_rates="fc1=0.2", pruning_scope="global")


def test_each_named_layer_keeps_its_own_fraction_the_others_their_kinds():
    config = C.PruningConfig(fc_rate=0.2, layer_rates="fc1=0.5,output=0")
    assert strategies.layer_rates(config, LENET) == {"fc1": 0.5, "fc2": 0.2, "output": 0.0}
    keep = strategies.keep_fractions(config, LENET, 3)
    assert keep == pytest.approx({"fc1": 0.125, "fc2": 0.512, "output": 1.0})
    # Without layer_rates: exactly the rates of before (fc_rate; the output at half of it).
    assert strategies.layer_rates(C.PruningConfig(fc_rate=0.2), LENET) == {"fc1": 0.2, "fc2": 0.2, "output": 0.1}


def test_a_name_of_no_layer_or_a_pruned_output_under_units_is_one_line():
    with pytest.raises(ValueError, match="layer_rates names 'fc9', not a prunable layer of this model; allowed: fc1, fc2, output"):
        strategies.layer_rates(C.PruningConfig(layer_rates="fc9=0.2"), LENET)
    with pytest.raises(ValueError, match="layer_rates output=0.2 with granularity='unit': the output layer keeps all its units"):
        strategies.layer_rates(C.PruningConfig(layer_rates="output=0.2", granularity="unit"), LENET)
    strategies.layer_rates(C.PruningConfig(layer_rates="output=0", granularity="unit"), LENET)  # 0: dense, allowed


def test_a_layer_emptied_by_its_own_rate_is_named_with_that_setting():
    config = C.PruningConfig(rounds=12, layer_rates="output=0.9")
    sizes = {"fc1": 784 * 300, "fc2": 300 * 100, "output": 100 * 10}
    emptied = strategies.first_emptied(config, LENET, sizes, config.rounds)
    assert emptied is not None and "layer_rates output=0.9" in emptied.message(config.rounds)


def test_the_fingerprint_of_a_run_without_layer_rates_is_unchanged():
    before = C.ExperimentConfig()
    assert "layer_rates" not in before.result_fields()  # earlier runs keep their fingerprints
    after = C.override(before, layer_rates="fc1=0.3")
    assert after.fingerprint() != before.fingerprint() and C.differing_fields(before, after) == ["layer_rates"]
    assert C.ExperimentConfig.from_dict(after.to_dict()) == after


def test_tied_units_need_one_rate():
    x = keras.Input((8,))
    a = keras.layers.Dense(6, name="a")(x)
    b = keras.layers.Dense(6, name="b")(x)
    y = keras.layers.Dense(3, name="out")(keras.layers.Add()([a, b]))
    model = tf_lottery.wrap(keras.Model(x, y))
    kinds = pruning.layer_kinds(model)
    units = unit_graph.trace(model, tuple(kinds))
    strategies.check_tied_rates(C.PruningConfig(granularity="unit", layer_rates="a=0.3,b=0.3"), kinds, units)
    with pytest.raises(ValueError, match="layer_rates gives a=0.3, b=0.2, whose units are tied .*give them one rate"):
        strategies.check_tied_rates(C.PruningConfig(granularity="unit", layer_rates="a=0.3,b=0.2"), kinds, units)


# -- a real search ---------------------------------------------------------------------------------
SPLITS = dict(train=600, validation=100, test=100)


def search_config(**fields):
    return C.override(tf_lottery.from_preset("lenet_300_100", "fast"), iterations=20, epochs=None, eval_every=20,
                      checkpoint_every=0, rounds=3, **fields)


@pytest.mark.parametrize("granularity", ["weight", "unit"])
def test_a_search_prunes_each_layer_at_its_own_rate(granularity):
    config = search_config(fc_rate=0.2, granularity=granularity, layer_rates="fc1=0.5,fc2=0.1")
    ticket = tf_lottery.find_ticket(config=config, splits=fashion_slice(**SPLITS), log=lambda line: None)
    for level, masks in enumerate(ticket.round_masks):
        if granularity == "weight":
            assert int(masks["fc1"].sum()) == mask_math.keep_count(784 * 300, 0.5 ** level)
            assert int(masks["fc2"].sum()) == mask_math.keep_count(300 * 100, 0.9 ** level)
            assert int(masks["output"].sum()) == mask_math.keep_count(100 * 10, 0.9 ** level)  # half of fc_rate
        else:
            units = {name: int(np.any(m, axis=0).sum()) for name, m in masks.items()}
            assert units["fc1"] == mask_math.keep_count(300, 0.5 ** level)
            assert units["fc2"] == mask_math.keep_count(100, 0.9 ** level)
            assert units["output"] == 10


def test_the_callback_prunes_at_the_same_per_layer_rates():
    lottery = tf_lottery.LotteryCallback(config=C.PruningConfig(layer_rates="fc1=0.5"))
    model = tf_lottery.wrap(zoo.get_builder("lenet_300_100")((28, 28, 1), seed=0))
    assert lottery.rates(model) == {"fc1": 0.5, "fc2": 0.2, "output": 0.1}
    wrong = tf_lottery.LotteryCallback(config=C.PruningConfig(layer_rates="dense_9=0.5"))
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    splits = fashion_slice(train=60, validation=1, test=1)
    with pytest.raises(ValueError, match="layer_rates names 'dense_9', not a prunable layer"):
        model.fit(splits.train_images / np.float32(255), splits.train_labels, epochs=1, callbacks=[wrong], verbose=0)


def test_from_the_shell_a_bad_name_is_one_line_and_nothing_is_written(tmp_path):
    out = tmp_path / "run"
    code, _, stderr = run_find("--train_subset=600", "--rounds=2", "--iterations=20", "--eval_every=10",
                               "--layer_rates=fc1=0.5,fc7=0.1", f"--output_dir={out}")
    errors = [line for line in stderr.splitlines() if line.startswith("lottery-find: error:")]
    assert code != 0 and len(errors) == 1 and "fc7" in errors[0] and "allowed: fc1, fc2, output" in errors[0], stderr
    assert not os.path.exists(out) or not os.listdir(out)


def test_a_resume_with_other_layer_rates_is_refused(tmp_path):
    out = tmp_path / "run"
    flags = ("--train_subset=600", "--rounds=2", "--iterations=20", "--eval_every=10", f"--output_dir={out}")
    code, _, stderr = run_find(*flags, "--layer_rates=fc1=0.5")
    assert code == 0, stderr
    code, _, stderr = run_find(*flags, "--layer_rates=fc1=0.4")
    assert code != 0 and "different hyperparameters (layer_rates)" in stderr, stderr
    code, _, stderr = run_find(*flags, "--layer_rates=fc1=0.50")  # the same rate spelled otherwise: resumes
    assert code == 0, stderr
