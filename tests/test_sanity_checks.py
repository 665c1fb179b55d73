"""The sanity checks of Frankle, Dziugaite, Roy & Carbin (ICLR 2021) through the search: the
score-inversion control keeps the weights each level's ranking prunes first, with the ticket's
counts, for IMP and for an at-initialization strategy; GraSP by magnitude runs as a strategy."""

import dataclasses
import json
import os

import numpy as np
import pytest

import tf_lottery
from tf_lottery import config as C
from tf_lottery.masking import pruning

from fashion_slices import fashion_slice


def _find(tmp_path, strategy="magnitude", scope="layerwise", rounds=2, name="run", log=lambda line: None):
    cfg = C.override(tf_lottery.from_preset("lenet_300_100", "fast"), iterations=20, epochs=None, eval_every=20,
                     checkpoint_every=0, rounds=rounds, fc_rate=0.5, pruning_strategy=strategy, pruning_scope=scope,
                     controls=("random_prune", "inverted"))
    return tf_lottery.find_ticket(config=cfg, splits=fashion_slice(train=600, validation=100, test=100),
                                  output_dir=str(tmp_path / name), log=log)


def _control_masks(ticket, name, round_index):
    return pruning.get_masks(pruning.wrap(ticket.control_model(name, round_index), warn=False))


def test_imp_inverted_keeps_the_smallest_trained_weights_with_the_tickets_counts(tmp_path):
    ticket = _find(tmp_path)
    inverted = _control_masks(ticket, "inverted", 1)
    main = ticket.round_masks[1]
    for name in main:
        assert int(inverted[name].sum()) == int(main[name].sum()), name
    # fc1 and fc2 keep half: the ticket keeps the larger half of the dense run's trained weights,
    # the inverted control the smaller half, so the two are complements.
    for name in ("fc1", "fc2"):
        np.testing.assert_array_equal(inverted[name], 1.0 - main[name], err_msg=name)
    # The output keeps 75%: the inverted control prunes the largest quarter, the ticket the smallest.
    overlap = (inverted["output"] * main["output"]).sum()
    assert overlap == main["output"].size - 2 * (main["output"].size - main["output"].sum())
    with open(os.path.join(ticket.output_dir, "round_01", "inverted.json")) as f:
        stage = json.load(f)
    assert stage["weights_remaining"] == pytest.approx(ticket.rounds[1]["weights_remaining"])
    assert set(stage["layers"]) == set(main)


@pytest.mark.parametrize("strategy", ["snip", "grasp_magnitude"])
def test_an_at_init_strategys_inverted_control_keeps_its_lowest_scores(tmp_path, strategy):
    ticket = _find(tmp_path, strategy, scope="global", rounds=2)
    main, inverted = ticket.round_masks[1], _control_masks(ticket, "inverted", 1)
    pool = ("fc1", "fc2")
    assert sum(int(inverted[n].sum()) for n in pool) == sum(int(main[n].sum()) for n in pool)
    assert int(inverted["output"].sum()) == int(main["output"].sum())
    # Pooled at half, the highest and the lowest half are complements (ties aside: scores are floats).
    agree = sum(int((inverted[n] * main[n]).sum()) for n in pool)
    assert agree <= 2, agree


def test_global_all_ranks_every_layer_together_and_resumes_from_its_masks(tmp_path):
    lines = []
    ticket = _find(tmp_path, "snip", scope="global_all", rounds=2, log=lines.append)
    assert not any(line.startswith("warning: pruning_strategy") for line in lines)
    masks = ticket.round_masks[1]
    total = sum(m.size for m in masks.values())
    assert abs(sum(int(m.sum()) for m in masks.values()) - total // 2) <= len(masks)
    # The output layer is ranked in the pool: it does not keep its own 75%.
    assert int(masks["output"].sum()) != int(round(0.75 * masks["output"].size))
    again = _find(tmp_path, "snip", scope="global_all", rounds=2)  # reads every mask back, counts checked
    for name in masks:
        np.testing.assert_array_equal(again.round_masks[1][name], masks[name])


def test_an_at_init_search_off_its_papers_scope_logs_one_warning_line(tmp_path):
    lines = []
    _find(tmp_path, "snip", scope="global", rounds=1, log=lines.append)
    warnings = [line for line in lines if line.startswith("warning: pruning_strategy=snip")]
    assert len(warnings) == 1 and warnings[0].endswith("pruning_scope=global_all")
