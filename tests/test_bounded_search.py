"""Long searches stay bounded (issue 19): a level that can prune nothing ends the search, a level that
would empty a layer is refused before anything is written, and memory stays flat across rounds."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tf_keras as keras

import tf_lottery
from tf_lottery import config as C
from tf_lottery.masking import pruning
from tf_lottery import strategies

from cli_runner import run_find

LENET = {"fc1": "fc", "fc2": "fc", "output": "fc"}
LENET_SIZES = {"fc1": 784 * 300, "fc2": 300 * 100, "output": 100 * 10}
CONV = {"conv1": "conv", "conv2": "conv", "dense": "fc", "output": "fc"}
CONV_SIZES = {"conv1": 27 * 8, "conv2": 72 * 8, "dense": 512 * 16, "output": 16 * 10}
# A search that reaches the floor of one weight per layer in 10 levels (fc 0.99, output at half).
TINY_STOP = ("--rounds=10000", "--fc_rate=0.99", "--keep_one_weight", "--iterations=4", "--eval_every=2",
             "--train_subset=120", "--validation_size=60", "--batch_size=60", "--deterministic")


def brute_force_emptied(config, kinds, sizes, rounds):
    """The first level whose rates alone round a layer (or the global pool) to no weight: a plain scan."""
    out = list(kinds)[-1]
    for level in range(1, rounds):
        keep = strategies.keep_fractions(config, kinds, level)
        counts = [round(sizes[n] * keep[n]) for n in kinds]
        if config.pruning_scope == "global":
            pool = [n for n in kinds if n != out]
            counts = [round(sizes[out] * keep[out]),
                      round(sum(sizes[n] for n in pool) * (1 - strategies.pooled_rate(config, kinds)) ** level)]
        if min(counts) < 1:
            return level
    return None


def brute_force_last_change(config, kinds, sizes, rounds):
    last = 0
    for level in range(1, rounds):
        if strategies.expected_counts(config, kinds, sizes, level) != strategies.expected_counts(config, kinds, sizes, level - 1):
            last = level
    return last


@pytest.mark.parametrize("kinds, sizes", [(LENET, LENET_SIZES), (CONV, CONV_SIZES)], ids=["lenet", "conv"])
@pytest.mark.parametrize("fields", [dict(), dict(fc_rate=0.5, conv_rate=0.3), dict(pruning_scope="global"),
                                    dict(fc_rate=0.9, output_rate=0.0), dict(output_rate=0.6)],
                         ids=["paper", "steep", "global", "dense_output", "output_rate"])
def test_the_first_emptied_and_the_last_changing_level_match_a_plain_scan(kinds, sizes, fields):
    config = C.PruningConfig(**fields)
    for rounds in (1, 2, 7, 40, 400):
        emptied = strategies.first_emptied(config, kinds, sizes, rounds)
        assert (emptied.level if emptied else None) == brute_force_emptied(config, kinds, sizes, rounds)
        assert strategies.last_changing_level(config, kinds, sizes, rounds) == brute_force_last_change(config, kinds, sizes, rounds)


def test_levels_so_deep_that_the_fraction_underflows_keep_one_weight():
    config = C.PruningConfig(fc_rate=0.2)
    assert 0.8 ** 10_000 == 0.0 and strategies.keep_fractions(config, LENET, 10_000)["fc1"] > 0.0
    counts = strategies.expected_counts(config, LENET, LENET_SIZES, 10_000)["layers"]
    assert counts == {"fc1": 1, "fc2": 1, "output": 1}
    assert strategies.last_changing_level(config, LENET, LENET_SIZES, 10_000) < 200


def test_a_round_count_that_would_empty_a_layer_is_refused_up_front(tmp_path):
    run = tmp_path / "run"
    code, out, err = run_find("--rounds=10000", "--iterations=4", "--train_subset=120", "--validation_size=60",
                              f"--output_dir={run}")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and out == "", err
    expected = brute_force_emptied(C.PruningConfig(), LENET, LENET_SIZES, 10_000)
    assert lines[0].startswith(f"lottery-find: error: rounds=10000: round {expected} would leave layer 'fc2' none "
                               "of its 30,000 weights (fc_rate=0.2 keeps"), lines[0]
    assert f"allowed: rounds <= {expected}, or keep_one_weight=True" in lines[0]
    assert not run.exists()
    # The last round it allows runs (refusal names the true bound, not a guess).
    config = C.PruningConfig(rounds=expected)
    assert strategies.first_emptied(config, LENET, LENET_SIZES, expected) is None


def test_the_search_stops_by_itself_at_the_first_level_that_prunes_nothing_and_resumes_to_the_same_line(tmp_path):
    run = tmp_path / "run"
    started = time.perf_counter()
    code, out, err = run_find(*TINY_STOP, f"--output_dir={run}")
    assert code == 0, err
    assert time.perf_counter() - started < 60
    config = C.PruningConfig(fc_rate=0.99)
    last = brute_force_last_change(config, LENET, LENET_SIZES, 10_000)
    line = (f"stopped after round {last} of 10000: round {last + 1} and later would prune nothing "
            "(every layer is down to its one kept weight)")
    assert line in out.splitlines(), out
    assert sorted(p for p in os.listdir(run) if p.startswith("round_")) == [f"round_{r:02d}" for r in range(last + 1)]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stop"] == {"after_round": last, "reason": line.split(": ", 1)[1]}
    assert len(summary["rounds"]) == last + 1
    # The last trained level pruned something; the next would keep the same weights.
    final = np.load(run / f"round_{last:02d}" / "masks.npz")
    before = np.load(run / f"round_{last - 1:02d}" / "masks.npz")
    assert any(final[k].sum() < before[k].sum() for k in final.files)
    assert all(int(final[k].sum()) == 1 for k in final.files)

    def stamps():  # every file's modification time, the run's lock aside (a rerun takes it again)
        return {os.path.join(d, p): os.stat(os.path.join(d, p)).st_mtime_ns
                for d, _, files in os.walk(run) for p in files if p != ".lock"}

    written = stamps()
    code, again, err = run_find(*TINY_STOP, f"--output_dir={run}")
    assert code == 0, err
    assert line in again.splitlines() and "main " not in again  # nothing trained
    assert stamps() == written


def test_the_callback_refuses_a_round_that_would_empty_a_layer():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 3)).astype("float32"), rng.integers(0, 2, size=64)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="output")(keras.layers.Dense(4, name="hidden")(inputs)))
    model = tf_lottery.wrap(model)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = tf_lottery.LotteryCallback(fc_rate=0.9)  # hidden keeps 12 * 0.1 ** 2 = 0.12 weights at level 2
    model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])  # level 1 keeps one weight of hidden
    masks = pruning.get_masks(model)
    with pytest.raises(ValueError) as info:
        model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    message = str(info.value)
    assert "\n" not in message and "round 2 would leave layer 'hidden' none of its 12 weights" in message
    assert "keep_one_weight=True" in message
    assert all(np.array_equal(masks[k], v) for k, v in pruning.get_masks(model).items())  # nothing changed
    kept = tf_lottery.LotteryCallback(fc_rate=0.9, keep_one_weight=True)
    assert kept.config.keep_one_weight


@pytest.mark.integration
def test_memory_stays_flat_across_rounds():
    """30 tiny rounds in a fresh process: peak RSS grows by < 60 MB from round 6 to 30 (it grew ~300 MB before
    each network stopped leaving its traced train step behind; measured 2026-12-06, benchmarks/RESULTS.md)."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "memory.py")
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"memory_{os.getpid()}.json")
    subprocess.run([sys.executable, script, "--rounds=30", "--calls=0", f"--json={out}"], check=True,
                   capture_output=True, timeout=600, env=dict(os.environ, TF_LOTTERY_OFFLINE="1"))
    samples = json.load(open(out))["search"]
    os.unlink(out)
    assert len(samples) == 30
    growth = samples[-1]["peak_mb"] - samples[5]["peak_mb"]
    assert growth < 60, [round(s["peak_mb"]) for s in samples]
