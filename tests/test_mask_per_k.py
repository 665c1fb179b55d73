"""The paper's instability protocol: one IMP mask per rewind step k, and random subnetworks beside it.

`lottery-instability --mask_per_k` finds round r's mask with an IMP search rewound to k (sharing
the run's dense training); `--controls` trains the copies of random_prune (a random mask with the
same per-layer counts, from theta_k) and random_reinit (the mask, kernels drawn afresh). A tiny
real search: Lenet on 600 Fashion-MNIST examples, 40 iterations a network, deterministic.
"""

import json
import os

import numpy as np
import pytest

import tf_lottery
from instability_runs import ITERATIONS, files_under, tiny_config
from tf_lottery import config as C
from tf_lottery.analysis import linear_path as instability, per_k_search, instability as stability
from tf_lottery.report import writer as report
from tf_lottery.masking import masks as mask_math
from tf_lottery.search.run_directory import RunDirectory

K = 20


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("mask_per_k") / "run")
    tf_lottery.find_ticket(config=tiny_config(rounds=3), output_dir=path, log=lambda line: None)
    return path


def quiet(lines=None):
    lines = [] if lines is None else lines
    return lines.append


def read_json(path):
    with open(path) as f:
        return json.load(f)


def load(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


KERNELS = (("fc1", "w0000"), ("fc2", "w0002"), ("output", "w0004"))  # Lenet: kernel, bias per layer


def assert_trained_under(copy_npz, masks):
    weights = load(copy_npz)
    for layer, key in KERNELS:
        assert np.count_nonzero(weights[key][masks[layer] == 0]) == 0, layer
        assert np.count_nonzero(weights[key]) == np.count_nonzero(masks[layer]), layer


def test_each_k_uses_the_mask_of_an_imp_search_rewound_to_k(run_dir, tmp_path):
    lines = []
    rows = stability.analyze(run_dir, levels=(2,), rewind_steps=(0, K), points=3, mask_per_k=True, log=quiet(lines))
    run = RunDirectory(run_dir)
    assert [(r["level"], r["rewind_step"], r.get("mask_rewind_step")) for r in rows] == [(2, 0, None), (2, K, K)]
    # k = 0 is the run's own rewind step: its mask is IMP's at k already, kept in the plain folder.
    assert os.path.isfile(os.path.join(run.instability_dir(2, 0), "path.json"))
    assert read_json(os.path.join(run.instability_dir(2, K, variant="mask_k"), "path.json")) == rows[1]
    assert not os.path.exists(run.instability_dir(2, K))

    # The same settings rewound to k from scratch find the very same masks, round after round.
    other = str(tmp_path / "rewind_k")
    tf_lottery.find_ticket(config=tiny_config(rounds=3, rewind_step=K), output_dir=other, log=quiet())
    search = run.per_k_search_dir(K)
    for level in (1, 2):
        ours, theirs = load(os.path.join(search, f"round_{level:02d}", "masks.npz")), load(os.path.join(other, f"round_{level:02d}", "masks.npz"))
        assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours)
    theirs_rewind, ours_rewind = load(os.path.join(other, "rewind.npz")), load(os.path.join(search, "rewind.npz"))
    assert all(np.array_equal(ours_rewind[k], theirs_rewind[k]) for k in ours_rewind)
    # ... and it shared the dense training rather than repeating it: round 0 is the run's, byte for byte.
    for name in os.listdir(os.path.join(run_dir, "round_00")):
        if os.path.isfile(os.path.join(run_dir, "round_00", name)):
            with open(os.path.join(run_dir, "round_00", name), "rb") as a, open(os.path.join(search, "round_00", name), "rb") as b:
                assert a.read() == b.read(), name
    assert sum("IMP rewound to k = 20" in line for line in lines) == 1
    first = read_json(os.path.join(search, "round_01", "main.json"))
    assert first["iterations"] == ITERATIONS - K and first["schedule_start"] == K

    # The copies at k train under that mask, which is not the run's own round 2.
    per_k = load(os.path.join(search, "round_02", "masks.npz"))
    assert any(not np.array_equal(per_k[layer], load(run.masks_file(2))[layer]) for layer, _ in KERNELS)
    for copy in "ab":
        assert_trained_under(os.path.join(run.instability_dir(2, K, variant="mask_k"), f"{copy}.npz"), per_k)
    assert rows[1]["weights_remaining"] == mask_math.weights_remaining(per_k)
    assert "IMP mask rewound to k" in stability.format_row(rows[1])


def test_random_pruning_and_reinitialization_controls(run_dir):
    rows = stability.analyze(run_dir, levels=(0, 1), rewind_steps=(K,), points=3,
                             controls="random_prune,random_reinit", log=quiet())
    # The dense network has no controls; level 1 has its ticket and both controls, in that order.
    assert [(r["level"], r.get("control")) for r in rows] == [(0, None), (1, None), (1, "random_prune"), (1, "random_reinit")]
    run = RunDirectory(run_dir)
    ticket_masks = load(run.masks_file(1))
    ticket, pruned, reinit = rows[1:]
    # Paired: the same data orders and iterations as the ticket's copies, the same sparsity.
    assert ticket["seeds"] == pruned["seeds"] == reinit["seeds"]
    assert {r["iterations"] for r in rows} == {ITERATIONS - K}
    assert ticket["weights_remaining"] == pruned["weights_remaining"] == reinit["weights_remaining"]

    # random_prune: the random mask with the ticket's per-layer counts drawn from the control's own seed.
    seed = stability.control_seed(0, 1, K, "random_prune")
    expected = mask_math.random_masks(ticket_masks, np.random.default_rng(seed))
    for layer, _ in KERNELS:
        assert np.count_nonzero(expected[layer]) == np.count_nonzero(ticket_masks[layer])
    assert any(not np.array_equal(expected[layer], ticket_masks[layer]) for layer, _ in KERNELS)
    for copy in "ab":
        assert_trained_under(os.path.join(run.instability_dir(1, K, variant="random_prune"), f"{copy}.npz"), expected)
        # random_reinit keeps the ticket's mask, but the copies are other networks than the ticket's.
        reinit_copy = os.path.join(run.instability_dir(1, K, variant="random_reinit"), f"{copy}.npz")
        assert_trained_under(reinit_copy, ticket_masks)
        ticket_copy = load(os.path.join(run.instability_dir(1, K), f"{copy}.npz"))
        assert not np.array_equal(load(reinit_copy)["w0000"], ticket_copy["w0000"])
    for row in rows:
        assert row["barrier"] == instability.error_barrier(row["errors"])
    assert stability.format_row(pruned).startswith("level  1 (random_prune) |")


def test_a_rerun_of_the_whole_protocol_rewrites_nothing(run_dir):
    sweep = dict(levels=(0, 2), rewind_steps=(0, K), points=3, mask_per_k=True, controls=("random_prune",))
    first = stability.analyze(run_dir, **sweep, log=quiet())
    root = os.path.join(run_dir, "instability")
    before = files_under(root)
    lines = []
    assert stability.analyze(run_dir, **sweep, log=quiet(lines)) == first
    assert files_under(root) == before
    assert all(line.startswith(("level ", "data: ")) for line in lines), lines
    # A lost result of the per-k protocol is recomputed from its copies alone, the same bytes.
    lost = os.path.join(RunDirectory(run_dir).instability_dir(2, K, variant="mask_k_random_prune"), "path.json")
    os.unlink(lost)
    stability.analyze(run_dir, **sweep, log=quiet())
    after = files_under(root)
    assert sorted(k for k in after if after[k] != before[k]) == [os.path.relpath(lost, root)]
    assert after[os.path.relpath(lost, root)][0] == before[os.path.relpath(lost, root)][0]


@pytest.mark.parametrize("arguments, message", [
    (dict(controls="inverted"), "unknown instability control 'inverted'; allowed: random_prune, random_reinit"),
    (dict(controls=["random_prune", "random_prune"]), "controls=random_prune,random_prune names a control twice"),
])
def test_bad_controls_are_one_line_and_write_nothing(run_dir, arguments, message):
    before = files_under(run_dir)
    with pytest.raises(ValueError, match=message) as info:
        stability.analyze(run_dir, levels=[1], **arguments, log=quiet())
    assert "\n" not in str(info.value)
    assert files_under(run_dir) == before


@pytest.mark.parametrize("fields, described", [
    (dict(schedule="one_shot"), "pruning_strategy='magnitude', schedule='one_shot'"),
    (dict(pruning_strategy="random"), "pruning_strategy='random', schedule='iterative'"),  # masks ignore k
])
def test_mask_per_k_is_refused_for_a_run_that_is_not_iterative_magnitude_pruning(tmp_path, fields, described):
    path = str(tmp_path / "run")
    tf_lottery.find_ticket(config=tiny_config(rounds=2, **fields), output_dir=path, log=quiet())
    before = files_under(path)
    with pytest.raises(ValueError, match=rf"mask_per_k needs a run of iterative magnitude pruning; .* {described}") as info:
        stability.analyze(path, levels=[1], rewind_steps=[K], mask_per_k=True, log=quiet())
    assert "\n" not in str(info.value)
    assert files_under(path) == before


def test_a_per_k_search_with_other_settings_is_refused_before_its_masks_are_used(run_dir, tmp_path):
    import shutil

    copy = str(tmp_path / "copy")
    shutil.copytree(run_dir, copy)
    stability.analyze(copy, levels=(1,), rewind_steps=(K,), points=3, mask_per_k=True, log=quiet())
    search = RunDirectory(copy).per_k_search_dir(K)
    with open(os.path.join(search, "config.json")) as f:
        record = json.load(f)
    record["config"]["pruning"]["fc_rate"] = 0.5  # an edited folder: its masks are not this run's IMP
    record["fingerprint"] = C.ExperimentConfig.from_dict(record["config"]).fingerprint()
    with open(os.path.join(search, "config.json"), "w") as f:
        json.dump(record, f)
    before = files_under(copy)
    with pytest.raises(ValueError, match=r"holds a search with other settings \(fc_rate\) than the run it belongs to") as info:
        stability.analyze(copy, levels=(1,), rewind_steps=(K,), points=3, mask_per_k=True, log=quiet())
    assert "\n" not in str(info.value)
    assert {k: v for k, v in files_under(copy).items() if k != ".lock"} == {k: v for k, v in before.items() if k != ".lock"}


def test_config_of_the_search_rewound_to_k():
    config = C.override(tiny_config(), retrain="lr_rewind", controls=("random_reinit",))
    rewound = per_k_search.config_for(config, 100)
    assert (rewound.pruning.rewind_step, rewound.pruning.retrain, rewound.pruning.controls) == (100, "weight_rewind", ())
    assert C.differing_fields(rewound, config) == ["rewind_step", "retrain", "controls"]


# -- the report ----------------------------------------------------------------------------------------
def path_fixture(run, level, k, remaining, errors, variant=""):
    """A path.json as stability writes it, errors set by hand."""
    row = {"level": level, "rewind_step": k, "weights_remaining": remaining, "iterations": 300 - k,
           "seeds": [1, 2], "same_data_order": False, "alphas": list(np.linspace(0, 1, len(errors))),
           "errors": errors, "barrier": instability.error_barrier(errors), "endpoint_errors": [errors[0], errors[-1]]}
    if variant.startswith("mask_k"):
        row["mask_rewind_step"] = k
    control = variant.replace("mask_k", "").strip("_")
    if control:
        row["control"] = control
    where = RunDirectory(run).instability_dir(level, k, variant=variant)
    os.makedirs(where)
    with open(os.path.join(where, "path.json"), "w") as f:
        json.dump(row, f)


def test_report_joins_the_run_rewind_step_to_the_per_k_line(tmp_path):
    from report_fixtures import make_run

    run = make_run(str(tmp_path / "run"), [0.80, 0.84, 0.86])
    path_fixture(run, 2, 0, 0.64, [0.10, 0.14, 0.10])  # k = 0: the run's rewind step, plain folder
    path_fixture(run, 2, 100, 0.64, [0.10, 0.12, 0.10], "mask_k")
    path_fixture(run, 2, 0, 0.64, [0.10, 0.30, 0.10], "random_prune")
    path_fixture(run, 2, 100, 0.64, [0.10, 0.20, 0.10], "mask_k_random_prune")
    out = str(tmp_path / "report")
    report.write_report([run], out, levels=(64.0,))
    curves = read_json(os.path.join(out, "curves.json"))
    assert sorted(k for k in curves if k.startswith("instability/")) == [
        "instability/level_02/mask_k", "instability/level_02/mask_k_random_prune"]
    np.testing.assert_allclose(curves["instability/level_02/mask_k"]["x"], [0, 100])
    np.testing.assert_allclose(curves["instability/level_02/mask_k"]["mean"], [0.04, 0.02])
    np.testing.assert_allclose(curves["instability/level_02/mask_k_random_prune"]["mean"], [0.20, 0.10])
    assert curves["instability/level_02/mask_k_random_prune"]["label"].endswith(": random pruning")
    with open(os.path.join(out, "report.md")) as f:
        text = f.read()
    assert "| 2 | 64.00 | 0 | IMP rewound to k | random pruning | 20.00 |" in text
    assert "| 2 | 64.00 | 100 | IMP rewound to k | - | 2.00 |" in text

    # A run-mask cell at a k that is not the run's rewind step (made without --mask_per_k) is not IMP's at
    # that k: it keeps a line and a table row of its own, never joins the per-k line.
    path_fixture(run, 2, 250, 0.64, [0.10, 0.16, 0.10])
    report.write_report([run], out, levels=(64.0,))
    curves = read_json(os.path.join(out, "curves.json"))
    np.testing.assert_allclose(curves["instability/level_02/mask_k"]["x"], [0, 100])
    np.testing.assert_allclose(curves["instability/level_02"]["x"], [0, 250])  # k = 0 is both
    assert curves["instability/level_02"]["label"].endswith(": IMP (run's mask)")
    with open(os.path.join(out, "report.md")) as f:
        text = f.read()
    assert "| 2 | 64.00 | 250 | run's | - | 6.00 |" in text and "| 2 | 64.00 | 0 | IMP rewound to k | - | 4.00 |" in text
