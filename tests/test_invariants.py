"""The invariants of a ticket search, checked on Lenet-300-100 with a slice of real Fashion-MNIST.

Pruned weights are 0 at every step and in every saved artefact, masks only shrink, a reset
restores survivors bit for bit, sparsity follows (1-p)^k, and only kernels are ever masked.
"""

import dataclasses

import tf_lottery
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tf_lottery_models as zoo
from tf_lottery import config as C
from tf_lottery import branches
from tf_lottery.search import checkpoints
from tf_lottery.masking import masks as mask_math
from tf_lottery.data import inputs
from tf_lottery.masking import pruning
from tf_lottery.search import training
from tf_lottery.search.run_directory import RunDirectory

from fashion_slices import fashion_slice

LENET_SIZES = {"fc1": 784 * 300, "fc2": 300 * 100, "output": 100 * 10}


class Recorder(keras.callbacks.Callback):
    """Checks pruned weights are exactly 0 after every training step and records each fit call."""

    def __init__(self, capture_iteration=None):
        super().__init__()
        self.steps_checked = 0
        self.violations = []
        self.fits = []  # one dict per fit call: masks and weights at its start, kernels at its end
        self.capture_iteration = capture_iteration
        self.captured = None

    def on_train_begin(self, logs=None):
        self.fits.append(
            {
                "start_iteration": int(self.model.optimizer.iterations.numpy()),
                "masks": pruning.get_masks(self.model),
                "weights": pruning.snapshot(self.model),
            }
        )

    def on_train_batch_end(self, batch, logs=None):
        iteration = int(self.model.optimizer.iterations.numpy())
        for wrapper in pruning.prunable_layers(self.model):
            kernel, mask, _ = wrapper.pruning_vars[0]
            name = pruning.layer_name(wrapper)
            leaked = int(np.count_nonzero(kernel.numpy() * (1.0 - mask.numpy())))
            if leaked:
                self.violations.append((len(self.fits), iteration, name, leaked))
            if not np.array_equal(mask.numpy(), self.fits[-1]["masks"][name]):
                self.violations.append((len(self.fits), iteration, name, "mask changed during the round"))
        self.steps_checked += 1
        if self.capture_iteration is not None and iteration == self.capture_iteration and self.captured is None:
            self.captured = pruning.snapshot(self.model)

    def on_train_end(self, logs=None):
        self.fits[-1]["end_iteration"] = int(self.model.optimizer.iterations.numpy())
        self.fits[-1]["kernels"] = pruning.get_kernels(self.model)
        self.fits[-1]["trained"] = pruning.snapshot(self.model)


def lenet_config(iterations=100, eval_every=50, rounds=3, **pruning_fields):
    cfg = tf_lottery.from_preset("lenet_300_100", "fast")
    return C.override(cfg, iterations=iterations, epochs=None, eval_every=eval_every, checkpoint_every=eval_every,
                      rounds=rounds, **pruning_fields)


def expected_reset(wrapped, rewind, masks):
    """The rewind weights with each kernel multiplied by its mask."""
    positions = pruning.kernel_positions(wrapped)
    out = [v.copy() for v in rewind]
    for name, pos in positions.items():
        out[pos] = rewind[pos] * masks[name]
    return out


def assert_bitwise_equal(got, want, what=""):
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, i
        assert np.array_equal(g, w), f"{what}: tensor {i} differs in {np.count_nonzero(g != w)} places"


@pytest.fixture(scope="module")
def splits():
    return fashion_slice(train=3000, validation=500, test=1000)


@pytest.fixture(scope="module")
def iterative(splits, tmp_path_factory):
    """Layerwise IMP, 4 rounds, with the random-pruning control: every stage is checked at every step."""
    out = str(tmp_path_factory.mktemp("iterative"))
    recorder = Recorder()
    cfg = lenet_config(rounds=4, controls=("random_prune",))
    ticket = tf_lottery.find_ticket(config=cfg, splits=splits, output_dir=out, callbacks=[recorder], log=lambda s: None)
    return ticket, recorder, out, cfg


# -- (a) pruned weights are exactly 0 at every step and everywhere they are saved -------------


def test_pruned_weights_are_zero_at_every_training_step(iterative):
    ticket, recorder, _, cfg = iterative
    stages = 1 + 2 * (cfg.pruning.rounds - 1)  # main each round, random_prune from round 1 on
    assert len(recorder.fits) == stages
    assert recorder.steps_checked == stages * cfg.training.iterations
    assert recorder.violations == []
    # the check had something to check: the sparse stages really were sparse
    assert all(mask_math.weights_remaining(f["masks"]) < 1.0 for f in recorder.fits[1:])


def test_pruned_weights_are_zero_in_round_checkpoints_and_stripped_model(iterative):
    ticket, _, out, cfg = iterative
    run = RunDirectory(out)
    suffix = "/.ATTRIBUTES/VARIABLE_VALUE"
    for round_index, masks in enumerate(ticket.round_masks):
        reader = tf.train.load_checkpoint(run.checkpoint_prefix(round_index))
        kernels = sorted(k for k in reader.get_variable_to_shape_map() if k.endswith("/layer/kernel" + suffix))
        assert len(kernels) == 3
        saved_masks = []
        for key in kernels:
            kernel = reader.get_tensor(key)
            mask = reader.get_tensor(key.replace("/layer/kernel" + suffix, "/mask" + suffix))
            assert np.all(kernel[mask == 0] == 0)
            assert np.count_nonzero(kernel) == np.count_nonzero(mask)  # trained survivors are non-zero
            saved_masks.append(mask)
        for mask, name in zip(saved_masks, ["fc1", "fc2", "output"]):
            np.testing.assert_array_equal(mask, masks[name])

    # The last round's trained weights, restored from its checkpoint into a fresh model, then stripped.
    last = len(ticket.round_masks) - 1
    fresh = tf_lottery.wrap(zoo.get_builder("lenet_300_100")((28, 28, 1), num_classes=10, seed=1))
    checkpoints.restore_round(run, last, fresh)
    np.testing.assert_array_equal(pruning.get_masks(fresh)["fc1"], ticket.round_masks[last]["fc1"])
    stripped = tf_lottery.strip(fresh)
    assert not any(pruning._is_wrapper(layer) for layer in stripped.layers)
    for name, mask in ticket.round_masks[last].items():
        kernel = stripped.get_layer(name).kernel.numpy()
        assert np.all(kernel[mask == 0] == 0)
        assert np.count_nonzero(kernel) == np.count_nonzero(mask)


# -- (b) masks only shrink -----------------------------------------------------------------


def test_masks_are_monotone_across_rounds(iterative):
    ticket = iterative[0]
    for earlier, later in zip(ticket.round_masks, ticket.round_masks[1:]):
        assert mask_math.is_subset(later, earlier)
        assert mask_math.weights_remaining(later) < mask_math.weights_remaining(earlier)
    assert mask_math.is_subset(ticket.masks, ticket.round_masks[-1])


# -- (c) a reset restores the survivors bit for bit ------------------------------------------


def test_every_main_round_starts_from_the_rewind_weights_bit_for_bit(iterative):
    ticket, recorder, _, cfg = iterative
    assert all(f["start_iteration"] == 0 for f in recorder.fits)  # one fit call per stage
    main_fits = [recorder.fits[0]] + recorder.fits[1::2]  # main, then (main, control) per round
    assert len(main_fits) == cfg.pruning.rounds
    for round_index, fit in enumerate(main_fits):
        np.testing.assert_array_equal(
            np.concatenate([m.ravel() for m in fit["masks"].values()]),
            np.concatenate([m.ravel() for m in ticket.round_masks[round_index].values()]),
        )
        want = expected_reset(ticket.rewound_model(), ticket.rewind_weights, fit["masks"])
        assert_bitwise_equal(fit["weights"], want, f"round {round_index}")
    # the random-pruning control also starts from the rewind weights, under its own mask
    for round_index, fit in enumerate(recorder.fits[2::2], start=1):
        want = expected_reset(ticket.rewound_model(), ticket.rewind_weights, fit["masks"])
        assert_bitwise_equal(fit["weights"], want, f"random_prune round {round_index}")
    # and the ticket's rewound model is the sparsest mask at its rewind point
    rewound = ticket.rewound_model("last")
    want = expected_reset(rewound, ticket.rewind_weights, ticket.masks)
    assert_bitwise_equal(pruning.snapshot(rewound), want, "rewound ticket")
    # while its trained model is the last round's trained network
    trained = ticket.trained_model("last", strip=False)
    assert_bitwise_equal(pruning.snapshot(trained), recorder.fits[-2]["trained"], "trained ticket")


def test_rewind_step_records_the_dense_weights_after_k_iterations(splits, tmp_path_factory):
    rewind_step = 30
    recorder = Recorder(capture_iteration=rewind_step)
    cfg = lenet_config(rounds=2, rewind_step=rewind_step)
    ticket = tf_lottery.find_ticket(config=cfg, splits=splits, callbacks=[recorder], log=lambda s: None)
    # captured in the same run, at the end of iteration k of the dense run
    assert_bitwise_equal(ticket.rewind_weights, recorder.captured)
    # round 1 starts from them, survivors bit for bit
    assert_bitwise_equal(recorder.fits[1]["weights"], expected_reset(ticket.rewound_model(), recorder.captured, ticket.round_masks[1]))
    assert not np.array_equal(recorder.fits[0]["weights"][0], recorder.captured[0])

    # Reproduced independently: the same dense model trained for exactly k iterations.
    keras.utils.set_random_seed(cfg.runtime.seed)
    model = pruning.wrap(zoo.get_builder("lenet_300_100")((28, 28, 1), num_classes=10, seed=cfg.runtime.seed))
    assert_bitwise_equal(pruning.snapshot(model), recorder.fits[0]["weights"])
    seed = branches.stage_seed(cfg.runtime.seed, 0, "main")
    keras.utils.set_random_seed(seed)
    training.default_objective(model, one_hot=False).compile(model, training.make_optimizer(cfg.training))
    batches = inputs.train_batches(splits.train_images, splits.train_labels, cfg.training.batch_size, seed)
    model.fit(batches, epochs=1, steps_per_epoch=rewind_step, verbose=0)
    assert_bitwise_equal(pruning.snapshot(model), ticket.rewind_weights)
    # theta_0 is the network before training, not the rewind point; the ambiguous old name is refused.
    assert_bitwise_equal(ticket.theta_0, recorder.fits[0]["weights"])
    with pytest.raises(AttributeError, match="use ticket.rewind_weights .* or ticket.theta_0") as info:
        ticket.initial_weights
    assert "\n" not in str(info.value)


# -- (d) (e) sparsity per layer, counted over kernels only ---------------------------------


def test_each_layer_keeps_its_fraction_within_one_weight_and_output_at_half_rate(iterative):
    ticket, _, _, cfg = iterative
    rates = {"fc1": 0.2, "fc2": 0.2, "output": 0.1}
    assert len(ticket.rounds) == cfg.pruning.rounds
    for k, (row, masks) in enumerate(zip(ticket.rounds, ticket.round_masks)):
        assert row["round"] == k
        for name, size in LENET_SIZES.items():
            kept = int(np.count_nonzero(masks[name]))
            assert abs(kept - size * (1 - rates[name]) ** k) <= 1
            assert kept == mask_math.keep_count(size, (1 - rates[name]) ** k)
            assert row["layers"][name] == pytest.approx(kept / size)
    # the ticket handed back holds the last round's mask
    np.testing.assert_array_equal(ticket.masks["output"], ticket.round_masks[-1]["output"])


def test_weights_remaining_counts_only_kernels(iterative):
    ticket = iterative[0]
    assert sum(m.size for m in ticket.masks.values()) == 266_200
    assert sorted(ticket.masks) == ["fc1", "fc2", "output"]
    for row, masks in zip(ticket.rounds, ticket.round_masks):
        kept = sum(int(np.count_nonzero(m)) for m in masks.values())
        assert row["weights_remaining"] == pytest.approx(kept / 266_200)
    # biases: 300 + 100 + 10 parameters exist but are never counted
    all_parameters = sum(v.size for v in ticket.rewind_weights)
    assert all_parameters == 266_200 + 410


# -- (f) global scope ------------------------------------------------------------------------


def test_global_scope_pools_hidden_layers_to_the_fraction(splits):
    cfg = lenet_config(iterations=60, eval_every=60, rounds=3, pruning_scope="global")
    ticket = tf_lottery.find_ticket(config=cfg, splits=splits, log=lambda s: None)
    pooled = LENET_SIZES["fc1"] + LENET_SIZES["fc2"]
    for k, masks in enumerate(ticket.round_masks):
        kept = int(np.count_nonzero(masks["fc1"])) + int(np.count_nonzero(masks["fc2"]))
        assert abs(kept - round(pooled * 0.8**k)) <= 1
        assert int(np.count_nonzero(masks["output"])) == mask_math.keep_count(1000, 0.9**k)
    # pooled, not per layer: the two hidden layers end at different fractions
    layers = mask_math.layer_weights_remaining(ticket.masks)
    assert layers["fc1"] != pytest.approx(layers["fc2"], abs=1e-3)


# -- (g) one-shot schedule -------------------------------------------------------------------


def test_one_shot_masks_prune_the_dense_run_kernels(splits):
    recorder = Recorder()
    cfg = lenet_config(iterations=60, eval_every=60, rounds=3, schedule="one_shot")
    ticket = tf_lottery.find_ticket(config=cfg, splits=splits, callbacks=[recorder], log=lambda s: None)
    dense_kernels = recorder.fits[0]["kernels"]
    assert recorder.fits[0]["end_iteration"] == 60
    rates = {"fc1": 0.2, "fc2": 0.2, "output": 0.1}
    for level, masks in enumerate(ticket.round_masks):
        keep = {name: (1 - rate) ** level for name, rate in rates.items()}
        want = mask_math.layerwise_masks(dense_kernels, mask_math.ones_like(dense_kernels), keep)
        for name in rates:
            np.testing.assert_array_equal(masks[name], want[name])
    # iterative pruning from round 1's trained kernels would have chosen differently
    iterative_level2 = mask_math.layerwise_masks(
        recorder.fits[1]["kernels"], ticket.round_masks[1], {n: (1 - r) ** 2 for n, r in rates.items()}
    )
    assert not np.array_equal(iterative_level2["fc1"], ticket.round_masks[2]["fc1"])


# -- (h) only kernels are masked: biases and batch norm never ----------------------------


def conv_bn_model(seed=0):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(4, 3, name="conv", kernel_initializer=keras.initializers.GlorotNormal(seed))(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D(4)(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10, name="logits", kernel_initializer=keras.initializers.GlorotNormal(seed + 1))(x)
    return keras.Model(inputs, outputs, name="conv_bn")


def test_biases_and_batch_norm_are_never_masked(splits):
    recorder = Recorder()
    cfg = lenet_config(iterations=40, eval_every=40, rounds=3, fc_rate=0.5, conv_rate=0.5)
    ticket = tf_lottery.find_ticket(conv_bn_model(), cfg, splits=splits, callbacks=[recorder], log=lambda s: None)
    model = ticket.rewound_model("last")
    assert recorder.violations == [] and recorder.steps_checked == 3 * 40
    assert sorted(ticket.masks) == ["conv", "logits"]
    for wrapper in pruning.prunable_layers(model):
        assert len(wrapper.pruning_vars) == 1
        assert wrapper.pruning_vars[0][0] is wrapper.layer.kernel
    # conv 3x3x1x4; logits (6*6*4)x10 after a 4x4 pool of 26x26x4
    assert sum(m.size for m in ticket.masks.values()) == 36 + 1440

    names = [v.name for v in pruning.model_variables(model)]
    kernels = set(pruning.kernel_positions(model).values())
    others = {names[i]: i for i in range(len(names)) if i not in kernels}
    leaves = sorted(n.split("/")[-1].split(":")[0] for n in others)
    assert leaves == ["beta", "bias", "bias", "gamma", "moving_mean", "moving_variance"]

    # The last round trains at 25% of the kernels: its trained kernels are sparse ...
    last = recorder.fits[-1]
    assert all(np.count_nonzero(k) == np.count_nonzero(last["masks"][n]) for n, k in last["kernels"].items())
    assert last["masks"]["conv"].sum() == 9 and last["masks"]["logits"].sum() == 810  # output at half rate
    # ... while every bias and batch-norm value was trained freely: none was held at 0.
    for name, i in others.items():
        trained = last["trained"][i]
        assert not np.array_equal(trained, last["weights"][i]), name
        if "conv" not in name:  # a conv bias before batch norm gets (near) zero gradient
            assert np.all(trained != 0), name
    # The reset restores them too, bit for bit.
    reset = pruning.snapshot(model)
    for name, i in others.items():
        assert np.array_equal(reset[i], ticket.rewind_weights[i]), name
