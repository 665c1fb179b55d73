"""The examples a data-dependent score reads (issue 18, Frankle et al. 2021's protocol): class-balanced
and drawn from the run's seed by default; runs made before the field existed keep seed 0's first batches
and resume under them; strategies that read no data keep their fingerprints."""

import json
import os

import numpy as np
import pytest

import tf_lottery
from tf_lottery import config as C
from tf_lottery.data import inputs as inputs_lib
from tf_lottery import strategies

from fashion_slices import fashion_slice


def _classes(batches):
    return np.concatenate([y for _, y in batches])


def test_balanced_indices_take_an_equal_number_per_class_from_the_seed():
    labels = np.repeat(np.arange(10), [50, 60, 70, 80, 90, 100, 30, 40, 25, 55])
    index = inputs_lib.balanced_indices(labels, 240, seed=7)
    assert len(index) == 240 and len(set(index.tolist())) == 240
    np.testing.assert_array_equal(np.bincount(labels[index], minlength=10), np.full(10, 24))
    np.testing.assert_array_equal(index, inputs_lib.balanced_indices(labels, 240, seed=7))
    assert set(index.tolist()) != set(inputs_lib.balanced_indices(labels, 240, seed=8).tolist())
    # One-hot labels draw the same examples as their class indices.
    np.testing.assert_array_equal(index, inputs_lib.balanced_indices(np.eye(10)[labels], 240, seed=7))


def test_a_class_that_runs_out_leaves_the_cycle_and_the_total_holds():
    labels = np.array([0] * 3 + [1] * 40 + [2] * 40)
    counts = np.bincount(labels[inputs_lib.balanced_indices(labels, 30, seed=0)], minlength=3)
    assert counts.tolist() == [3, 14, 13] or counts.tolist() == [3, 13, 14]
    assert len(inputs_lib.balanced_indices(labels, 500, seed=0)) == len(labels)  # capped at the set


def test_the_sample_is_balanced_batches_of_the_runs_batch_size_scaled_like_training():
    inputs = inputs_lib.from_splits(fashion_slice(train=600, validation=50, test=50), batch_size=60)
    batches = inputs.sample(4, seed=3, balanced=True)
    assert [len(y) for _, y in batches] == [60] * 4
    np.testing.assert_array_equal(np.bincount(_classes(batches), minlength=10), np.full(10, 24))
    x = np.concatenate([b for b, _ in batches])
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5
    first = inputs.sample(4)  # seed 0's first batches, as before 0.3
    reference = inputs_lib.as_numpy_batches(inputs.train_from(0, 0), 4)
    for (a, ya), (b, yb) in zip(first, reference):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ya, yb)


def test_only_the_strategies_that_read_data_are_marked_so():
    reads_data = {name for name in strategies.names() if strategies.get(name).needs_data}
    assert reads_data == {"snip", "grasp", "grasp_magnitude"}
    assert set(C.DATA_FREE_STRATEGIES) == set(strategies.names()) - reads_data


def test_score_batches_is_in_the_fingerprint_only_where_the_strategy_reads_data():
    base = tf_lottery.from_preset("lenet_300_100", "fast")
    assert base.pruning.score_batches == "balanced"
    for strategy in ("magnitude", "synflow", "random"):
        a = C.override(base, pruning_strategy=strategy)
        assert a.fingerprint() == C.override(a, score_batches="first").fingerprint()
    snip = C.override(base, pruning_strategy="snip")
    assert snip.fingerprint() != C.override(snip, score_batches="first").fingerprint()
    assert C.differing_fields(snip, C.override(snip, score_batches="first")) == ["score_batches"]
    with pytest.raises(ValueError, match=r"^unknown score_batches 'random'; allowed: balanced, first$"):
        C.override(base, score_batches="random")


def test_a_version_2_record_reads_as_first_batches_with_its_fingerprint():
    snip = C.override(tf_lottery.from_preset("lenet_300_100", "fast"), pruning_strategy="snip", score_batches="first")
    saved = snip.to_dict()
    del saved["pruning"]["score_batches"]  # what 0.2 wrote
    upgraded = C.ExperimentConfig.from_dict(C.upgrade(saved, 2))
    assert upgraded.pruning.score_batches == "first" and upgraded.fingerprint() == snip.fingerprint()


def _snip(tmp_path, name, seed=0, score_batches="balanced", log=lambda line: None):
    cfg = C.override(tf_lottery.from_preset("lenet_300_100", "fast"), iterations=10, epochs=None, eval_every=10,
                     checkpoint_every=0, rounds=2, fc_rate=0.5, pruning_strategy="snip", seed=seed,
                     pruning_scope="global_all", score_batches=score_batches)
    return tf_lottery.find_ticket(config=cfg, splits=fashion_slice(train=600, validation=100, test=100),
                                  output_dir=str(tmp_path / name), log=log)


def test_snip_scores_other_examples_under_each_rule_and_resumes_an_old_run_under_its_own(tmp_path):
    first = _snip(tmp_path, "first", score_batches="first")
    balanced = _snip(tmp_path, "balanced")
    assert any(not np.array_equal(first.round_masks[1][n], balanced.round_masks[1][n]) for n in first.round_masks[1])
    # A run directory written before the field existed: version 2, no score_batches in its config.
    path = os.path.join(first.output_dir, "config.json")
    with open(path) as f:
        record = json.load(f)
    del record["config"]["pruning"]["score_batches"]
    record["version"] = 2
    with open(path, "w") as f:
        json.dump(record, f)
    again = _snip(tmp_path, "first", score_batches="first")  # resumes: every mask read back
    for name, mask in first.round_masks[1].items():
        np.testing.assert_array_equal(again.round_masks[1][name], mask)
    before = os.listdir(first.output_dir)
    with pytest.raises(ValueError, match="score_batches") as refused:
        _snip(tmp_path, "first")  # today's default on the old run is another experiment
    assert "\n" not in str(refused.value)
    assert os.listdir(first.output_dir) == before


def test_a_tf_data_pipeline_is_scored_on_its_first_batches_and_the_search_says_so(tmp_path):
    import tensorflow as tf

    s = fashion_slice(train=600, validation=100, test=100)
    as_float = lambda x: (x / 255.0).astype("float32")
    train = tf.data.Dataset.from_tensor_slices((as_float(s.train_images), s.train_labels)).batch(60)
    inputs = inputs_lib.from_datasets(train, train, train, batch_size=60, example_rank=2)
    assert not inputs.can_balance
    first = inputs.sample(4, seed=5, balanced=True)
    np.testing.assert_array_equal(_classes(first), s.train_labels[:240])  # its own order, not balanced
    cfg = C.override(tf_lottery.from_preset("lenet_300_100", "fast"), iterations=10, epochs=None, eval_every=10,
                     checkpoint_every=0, rounds=2, fc_rate=0.5, pruning_strategy="snip", pruning_scope="global_all")
    lines = []
    tf_lottery.find_ticket(config=cfg, train=train,
                           validation=tf.data.Dataset.from_tensor_slices((as_float(s.validation_images),
                                                                          s.validation_labels)).batch(50),
                           test=tf.data.Dataset.from_tensor_slices((as_float(s.test_images), s.test_labels)).batch(50),
                           output_dir=str(tmp_path / "run"), log=lines.append)
    warnings = [line for line in lines if line.startswith("warning: score_batches=balanced")]
    assert warnings == ["warning: score_batches=balanced with a tf.data pipeline: snip scores its first 4 batches "
                        "(pass NumPy arrays for class-balanced ones)"]
