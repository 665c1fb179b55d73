"""`Ticket`, what find_ticket hands back, without a search (issue 21: it was tested only end to end):
round selection, the sparsest masks, its one-line summary, and the names it refuses."""

import numpy as np
import pytest

from tf_lottery.search.ticket import Ticket


def rows(accuracies):
    return [{"round": r, "weights_remaining": 0.8 ** r, "early_stop_test_accuracy": a, "test_accuracy": a}
            for r, a in enumerate(accuracies)]


def ticket(accuracies, output_dir="runs/x"):
    masks = [{"fc1": (np.arange(10) < 10 * 0.8 ** r).astype(np.float32)} for r in range(len(accuracies))]
    return Ticket(config=None, rounds=rows(accuracies), round_masks=masks,
                  rewind_weights=[np.zeros(3, np.float32)], output_dir=output_dir)


def test_best_round_is_the_highest_early_stop_accuracy_ties_to_the_sparser():
    t = ticket([0.80, 0.86, 0.85, 0.86])
    assert t.round_index("best") == 3 and t.best_round()["round"] == 3
    assert t.round_index("last") == 3 and t.round_index(" Best ") == 3
    assert ticket([0.80, 0.87, 0.85]).round_index() == 1
    assert t.round_index(2) == 2 and t.round_index("0") == 0


@pytest.mark.parametrize("which, message", [
    ("first", "round 'first' is not a round; allowed: best, last or 0..3"),
    (7, r"round 7 is out of range; allowed: best, last or 0..3 \(the finished rounds\)"),
])
def test_a_round_that_is_not_there_is_one_line(which, message):
    with pytest.raises(ValueError, match=message):
        ticket([0.80, 0.86, 0.85, 0.86]).round_index(which)


def test_the_sparsest_masks_and_the_summary_line():
    t = ticket([0.80, 0.86, 0.85])
    assert np.array_equal(t.masks["fc1"], t.round_masks[-1]["fc1"])
    assert t.weights_remaining == pytest.approx(0.7)  # 7 of 10 weights of the last round's mask
    assert repr(t) == ("Ticket(3 rounds, sparsest 70.00% of weights, best early-stop test accuracy 0.8600 at "
                       "round 1, output_dir='runs/x')")


@pytest.mark.parametrize("name, points_to", [
    ("model", "ticket.trained_model(round) to evaluate or export, ticket.rewound_model(round) to retrain"),
    ("initial_weights", "use ticket.rewind_weights (what survivors are reset to) or ticket.theta_0"),
])
def test_ambiguous_old_names_are_refused_with_what_to_use(name, points_to):
    with pytest.raises(AttributeError, match=points_to.replace("(", r"\(").replace(")", r"\)")) as info:
        getattr(ticket([0.8]), name)
    assert "\n" not in str(info.value)
