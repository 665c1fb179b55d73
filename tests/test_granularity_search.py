"""Every granularity through IMP: the level loop, rewinding, the random-pruning control, resume, the
Keras callback, and the bad inputs (one line each, nothing written)."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tf_keras as keras

import tf_lottery
import tf_lottery_models as zoo
from tf_lottery import config as C
from tf_lottery.masking import granularity as granular
from tf_lottery.masking import pruning, unit_graph

from export_helpers import tree
from fashion_slices import as_float, fashion_slice

KINDS = {"fc1": "fc", "fc2": "fc", "output": "fc"}
FIND = [sys.executable, "-m", "tf_lottery.cli.find"]


def _config(granularity, rounds=3, rate=0.5, iterations=20, **pruning_values):
    cfg = tf_lottery.from_preset("lenet_300_100", "fast")
    return dataclasses.replace(
        cfg,
        training=dataclasses.replace(cfg.training, iterations=iterations, eval_every=iterations, checkpoint_every=0),
        pruning=dataclasses.replace(cfg.pruning, rounds=rounds, fc_rate=rate, granularity=granularity,
                                    controls=("random_prune",), **pruning_values),
    )


def _find(tmp_path, granularity, name="run", **values):
    splits = fashion_slice(train=600, validation=100, test=200)
    return tf_lottery.find_ticket(config=_config(granularity, **values), splits=splits,
                                  output_dir=str(tmp_path / name), log=lambda line: None)


def _keep(ticket, level):
    """The keep fractions the config gives after `level` levels (fc 0.5, the output layer half of it)."""
    return {"fc1": 0.5 ** level, "fc2": 0.5 ** level, "output": 0.75 ** level}


def _units(ticket):
    model = zoo.get_builder("lenet_300_100")((28, 28, 1))
    return unit_graph.trace(model, ("fc1", "fc2", "output"))


def _control_masks(ticket, name, round_index):
    return pruning.get_masks(pruning.wrap(ticket.control_model(name, round_index), warn=False))


@pytest.mark.parametrize("granularity", ["unit", "block", "m_by_n"])
def test_each_round_and_its_random_pruning_control_are_of_the_granularity(tmp_path, granularity):
    ticket = _find(tmp_path, granularity, rounds=3 if granularity != "m_by_n" else 2)
    units = _units(ticket) if granularity == "unit" else None
    for level in range(1, len(ticket.round_masks)):
        keep = _keep(ticket, level)
        assert granular.check(granularity, ticket.round_masks[level], keep, KINDS, units) is None, level
    last = len(ticket.round_masks) - 1
    shuffled = ticket.round_masks[last] if granularity == "m_by_n" else None
    control = _control_masks(ticket, "random_prune", last)
    assert granular.check(granularity, control, _keep(ticket, last), KINDS, units) is None
    for name, mask in control.items():  # same survivors per layer, other positions
        assert np.count_nonzero(mask) == np.count_nonzero(ticket.round_masks[last][name])
    assert any(not np.array_equal(control[n], ticket.round_masks[last][n]) for n in control) or shuffled is not None
    if granularity == "unit":
        alive = ticket.round_masks[last]["fc1"].any(axis=0)
        assert int(alive.sum()) == 75 and not ticket.round_masks[last]["fc2"][~alive].any()
    if granularity == "m_by_n":
        assert abs(ticket.rounds[1]["weights_remaining"] - 0.5) < 1e-9


def test_m_by_n_ends_after_its_one_level_and_says_why(tmp_path):
    ticket = _find(tmp_path, "m_by_n", rounds=4)
    assert len(ticket.rounds) == 2  # level 1 sets the 2:4 pattern; later levels would prune nothing
    summary = open(os.path.join(ticket.output_dir, "summary.json")).read()
    assert "2:4" in summary or "m_by_n" in summary


def test_unit_survivors_rewind_to_iteration_k(tmp_path):
    ticket = _find(tmp_path, "unit", rounds=2, rewind_step=10)
    rewound = ticket.rewound_model("last")
    masks = pruning.get_masks(rewound)
    positions = pruning.kernel_positions(rewound)
    values = pruning.snapshot(rewound)
    for name, position in positions.items():
        np.testing.assert_array_equal(values[position], ticket.rewind_weights[position] * masks[name])


def test_a_resumed_unit_search_gives_the_masks_of_an_uninterrupted_one(tmp_path):
    whole = _find(tmp_path, "unit", name="whole", rounds=3)
    _find(tmp_path, "unit", name="resumed", rounds=2)
    resumed = _find(tmp_path, "unit", name="resumed", rounds=3)
    for a, b in zip(whole.round_masks, resumed.round_masks):
        assert all(np.array_equal(a[n], b[n]) for n in a)
    assert [r["test_accuracy"] for r in whole.rounds] == [r["test_accuracy"] for r in resumed.rounds]


def test_the_callback_prunes_whole_units_in_a_users_fit_loop():
    splits = fashion_slice(train=600, validation=1, test=10)
    images, labels = as_float(splits.train_images), splits.train_labels
    model = tf_lottery.wrap(zoo.get_builder("lenet_300_100")((28, 28, 1), seed=3))
    lottery = tf_lottery.LotteryCallback(fc_rate=0.5, granularity="unit")
    model.compile(keras.optimizers.Adam(1.2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for _ in range(3):
        model.fit(images, labels, batch_size=60, epochs=1, callbacks=[lottery], verbose=0)
    masks = pruning.get_masks(model)
    units = unit_graph.trace(model, ("fc1", "fc2", "output"))
    assert granular.check("unit", masks, {"fc1": 0.25, "fc2": 0.25, "output": 1.0}, KINDS, units) is None
    assert int(masks["fc1"].any(axis=0).sum()) == 75 and int(masks["fc2"].any(axis=0).sum()) == 25


def _find_process(*flags):
    env = dict(os.environ, TF_LOTTERY_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(FIND + list(flags), capture_output=True, text=True, timeout=300, env=env)


def _error(result) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("lottery-find: error:")]
    assert result.returncode != 0 and len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return errors[0]


@pytest.mark.parametrize("flags, expected", [
    (["--granularity=channel"], "unknown granularity 'channel'; allowed: weight, unit, block, m_by_n"),
    (["--granularity=unit", "--pruning_strategy=snip"], "pruning_strategy='snip' cannot score granularity='unit'"),
    (["--granularity=block", "--pruning_scope=global"], "allowed: pruning_scope='layerwise'"),
    (["--granularity=unit", "--output_rate=0.1"], "the output layer keeps all its units"),
])
def test_bad_granularities_are_one_line_and_write_nothing(tmp_path, flags, expected):
    out = tmp_path / "run"
    error = _error(_find_process(*flags, "--rounds=2", "--iterations=10", "--train_subset=300", f"--output_dir={out}"))
    assert expected in error, error
    assert not out.exists()


def test_a_resume_with_another_granularity_is_one_line_and_changes_nothing(tmp_path):
    out = tmp_path / "run"
    first = _find_process("--rounds=2", "--iterations=10", "--eval_every=10", "--train_subset=300", f"--output_dir={out}")
    assert first.returncode == 0, first.stderr[-2000:]
    before = {k: v for k, v in tree(out).items() if k != ".lock"}  # the lock names the last process to open the run
    error = _error(_find_process("--rounds=3", "--iterations=10", "--eval_every=10", "--train_subset=300",
                                 "--granularity=unit", f"--output_dir={out}"))
    assert "granularity" in error, error
    assert {k: v for k, v in tree(out).items() if k != ".lock"} == before


def test_structured_imp_under_mirrored_strategy_matches_one_device(tmp_path):
    out = tmp_path / "report.json"
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mirrored_granularity_main.py")
    result = subprocess.run([sys.executable, script, str(out), str(tmp_path)], capture_output=True, text=True,
                            timeout=600, env=dict(os.environ, TF_LOTTERY_OFFLINE="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["replicas"] == 2
    for granularity in ("unit", "block"):
        got = report[granularity]
        assert got["check"] is None, got
        assert got["remaining"] == got["single_remaining"]
        assert got["agreement"] >= 0.99, got  # reductions in another order may flip a near-tied unit or block


def _residual_model():
    """A user's functional model: convolutions with BatchNormalization, a residual Add, pooling, Dense."""
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="stem")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn_stem")(x))
    y = keras.layers.Conv2D(8, 3, padding="same", name="body")(x)
    y = keras.layers.BatchNormalization(name="bn_body")(y)
    x = keras.layers.ReLU()(keras.layers.Add()([x, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def test_a_users_residual_model_prunes_tied_filters_together_and_exports_compact(tmp_path):
    splits = fashion_slice(train=600, validation=100, test=512)
    cfg = C.override(_config("unit", rounds=3, rate=0.5), conv_rate=0.5, controls=())
    model = _residual_model()
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ticket = tf_lottery.find_ticket(model, config=cfg, splits=splits, output_dir=str(tmp_path / "run"),
                                    log=lambda line: None)
    masks = ticket.masks
    stem, body = masks["stem"].reshape(-1, 8).any(axis=0), masks["body"].reshape(-1, 8).any(axis=0)
    np.testing.assert_array_equal(stem, body)  # tied by the Add: the same filters survive in both
    assert int(stem.sum()) == 2  # 8 filters at 0.5 for two levels
    assert not masks["fc"][~stem].any()  # pooled channels of removed filters feed nothing
    result = ticket.export(str(tmp_path / "serving"), round="last", format="compact")
    assert result.verification.ok and result.verification.max_abs_diff <= 1e-5
    meta = json.load(open(os.path.join(result.path, "assets.extra", "tf_lottery_export.json")))
    assert meta["layers"]["stem"]["shape"] == [3, 3, 1, 2] and meta["layers"]["body"]["shape"] == [3, 3, 2, 2]
    assert meta["layers"]["fc"]["shape"] == [2, 4]
