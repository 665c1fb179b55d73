"""The model zoo: every model builds, is seeded, is prunable by TF-MOT, and carries the paper's preset."""

import dataclasses

import numpy as np
import pytest

import tf_keras as keras

import tf_lottery_models as zoo
from tf_lottery.masking.tfmot import tfmot

ALL_MODELS = ["conv2", "conv4", "conv6", "lenet_300_100", "resnet18", "vgg19"]
# Small enough to be cheap, large enough for Conv-6's three pools.
TINY_SHAPE = (8, 8, 3)


def weighted_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Dense and Conv2D layers in model.layers order: the layers tf_lottery prunes."""
    return [layer for layer in model.layers if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))]


def kernel_count(model: keras.Model) -> int:
    """Weights in the kernels of Dense and Conv2D layers (what the paper counts)."""
    return sum(int(np.prod(layer.kernel.shape)) for layer in weighted_layers(model))


def test_names_lists_every_model():
    assert zoo.names() == ALL_MODELS


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("input_shape", [(28, 28, 1), (32, 32, 3)])
def test_builds_on_mnist_and_cifar_shapes(name, input_shape):
    model = zoo.get_builder(name)(input_shape, num_classes=10, seed=0)
    assert model.input_shape == (None, *input_shape)
    assert model.output_shape == (None, 10)
    # tf_lottery takes the last Dense/Conv in model.layers as the output layer.
    last = weighted_layers(model)[-1]
    assert last.name == "output"
    assert last.activation is keras.activations.linear


def test_lenet_kernel_count():
    model = zoo.get_builder("lenet_300_100")((28, 28, 1))
    assert kernel_count(model) == 784 * 300 + 300 * 100 + 100 * 10 == 266_200


# On 32x32x3; convs are 3x3 'same', every pool halves the side, the head is FC 256, 256, 10.
CONV_KERNELS_32x32x3 = {
    "conv2": (3 * 3 * 3 * 64 + 3 * 3 * 64 * 64) + (16 * 16 * 64 * 256 + 256 * 256 + 256 * 10),
    "conv4": (3 * 3 * 3 * 64 + 3 * 3 * 64 * 64 + 3 * 3 * 64 * 128 + 3 * 3 * 128 * 128)
    + (8 * 8 * 128 * 256 + 256 * 256 + 256 * 10),
    "conv6": (
        3 * 3 * 3 * 64
        + 3 * 3 * 64 * 64
        + 3 * 3 * 64 * 128
        + 3 * 3 * 128 * 128
        + 3 * 3 * 128 * 256
        + 3 * 3 * 256 * 256
    )
    + (4 * 4 * 256 * 256 + 256 * 256 + 256 * 10),
}


@pytest.mark.parametrize("name", sorted(CONV_KERNELS_32x32x3))
def test_conv_kernel_counts(name):
    model = zoo.get_builder(name)((32, 32, 3))
    assert kernel_count(model) == CONV_KERNELS_32x32x3[name]


def test_conv_kernel_counts_match_the_paper():
    # Figure 2: Conv-2 4.3M weights / 38K conv, Conv-4 2.4M / 260K, Conv-6 conv 1.1M.
    assert CONV_KERNELS_32x32x3["conv2"] == 4_300_992
    assert CONV_KERNELS_32x32x3["conv4"] == 2_425_024
    assert CONV_KERNELS_32x32x3["conv6"] == 2_261_184


def test_deep_models_kernel_counts():
    # Figure 2: Resnet-18 270K conv weights, VGG-19 20.0M.
    resnet = zoo.get_builder("resnet18")((32, 32, 3))
    assert kernel_count(resnet) == 270_896  # 270,256 conv (2,560 of them in the projections) + 640 FC
    vgg = zoo.get_builder("vgg19")(TINY_SHAPE)  # kernels do not depend on the side, only the channels
    convs = 3 * 64 + 64 * 64 + 64 * 128 + 128 * 128 + 128 * 256 + 3 * 256 * 256 + 256 * 512 + 7 * 512 * 512
    assert kernel_count(vgg) == 9 * convs + 512 * 10 == 20_024_000


def test_vgg_skips_pools_below_2x2():
    model = zoo.get_builder("vgg19")(TINY_SHAPE)  # 8 -> 4 -> 2 -> 1, fourth pool skipped
    pools = [layer.name for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert pools == ["pool1", "pool2", "pool3"]
    assert model.get_layer("conv16").output_shape == (None, 1, 1, 512)


@pytest.mark.parametrize("name", ["conv2", "lenet_300_100"])
def test_dropout_after_each_hidden_fc(name):
    model = zoo.get_builder(name)(TINY_SHAPE, dropout_rate=0.5, seed=0)
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert [layer.rate for layer in dropouts] == [0.5, 0.5]
    assert [layer.name for layer in dropouts] == ["dropout1", "dropout2"]


@pytest.mark.parametrize("name", ["resnet18", "vgg19"])
def test_dropout_refused_without_hidden_fc(name):
    with pytest.raises(ValueError, match="dropout_rate=0.5"):
        zoo.get_builder(name)(TINY_SHAPE, dropout_rate=0.5)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_seed_determines_weights(name):
    build = zoo.get_builder(name)
    first, again, other = (build(TINY_SHAPE, seed=seed).get_weights() for seed in (1, 1, 2))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    kernels = [i for i, w in enumerate(first) if w.ndim >= 2]
    assert not any(np.array_equal(first[i], other[i]) for i in kernels)


def test_initialization_is_glorot_normal_with_zero_biases():
    model = zoo.get_builder("lenet_300_100")((28, 28, 1), seed=0)
    fc1 = model.get_layer("fc1")
    assert np.all(fc1.bias.numpy() == 0)
    # GlorotNormal draws a truncated normal rescaled to std sqrt(2 / (fan_in + fan_out)).
    assert np.std(fc1.kernel.numpy()) == pytest.approx(np.sqrt(2.0 / (784 + 300)), rel=0.02)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_prune_low_magnitude_wraps(name):
    model = zoo.get_builder(name)(TINY_SHAPE, seed=0)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model)
    # The wrapper class is not public API; TF-MOT names each wrapper after the layer it wraps.
    names = {layer.name for layer in pruned.layers}
    assert {f"prune_low_magnitude_{layer.name}" for layer in weighted_layers(model)} <= names
    assert "prune_low_magnitude_output" in names
    assert pruned.output_shape == (None, 10)


@pytest.mark.parametrize("name", ["resnet18", "vgg19"])
def test_deep_models_train_one_step(name):
    model = zoo.get_builder(name)(TINY_SHAPE, seed=0)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, *TINY_SHAPE)).astype("float32")
    labels = rng.integers(0, 10, size=4)
    history = model.fit(images, labels, batch_size=2, epochs=1, steps_per_epoch=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


PAPER_PRESETS = {
    "lenet_300_100": dict(optimizer="adam", learning_rate=1.2e-3, batch_size=60, iterations=50_000, fc_rate=0.2),
    "conv2": dict(optimizer="adam", learning_rate=2e-4, batch_size=60, iterations=20_000, conv_rate=0.1, fc_rate=0.2),
    "conv4": dict(optimizer="adam", learning_rate=3e-4, batch_size=60, iterations=25_000, conv_rate=0.1, fc_rate=0.2),
    "conv6": dict(optimizer="adam", learning_rate=3e-4, batch_size=60, iterations=30_000, conv_rate=0.15, fc_rate=0.2),
    "resnet18": dict(
        optimizer="sgd", learning_rate=0.1, momentum=0.9, batch_size=128, iterations=30_000,
        lr_boundaries=(20_000, 25_000), warmup_iterations=20_000, conv_rate=0.2, fc_rate=0.2, output_rate=0.0,
        pruning_scope="global",
    ),
    "vgg19": dict(
        optimizer="sgd", learning_rate=0.1, momentum=0.9, batch_size=64, iterations=112_000,
        lr_boundaries=(56_000, 84_000), warmup_iterations=10_000, conv_rate=0.2, fc_rate=0.2, output_rate=0.0,
        pruning_scope="global",
    ),
}


@pytest.mark.parametrize("name", ALL_MODELS)
def test_presets_match_the_paper(name):
    assert dict(zoo.get_preset(name)) == PAPER_PRESETS[name]
    config = zoo.from_preset(name, "paper")
    for field, value in PAPER_PRESETS[name].items():
        assert config.flat()[field] == value, field


def test_small_nets_prune_fc_at_20_percent_and_output_at_half():
    for name in ["conv2", "conv4", "conv6", "lenet_300_100"]:
        pruning = zoo.from_preset(name).pruning
        assert pruning.fc_rate == 0.2 and pruning.output_rate is None and pruning.pruning_scope == "layerwise"


def test_unknown_name_lists_known_names():
    message = "unknown model 'foo'; known models: conv2, conv4, conv6, lenet_300_100, resnet18, vgg19"
    for lookup in (zoo.get_builder, zoo.get_preset):
        with pytest.raises(ValueError) as error:
            lookup("foo")
        assert str(error.value) == message


def test_register_refuses_a_taken_name():
    with pytest.raises(ValueError, match="'conv2' is already registered"):
        zoo.register("conv2", zoo.get_preset("conv2"))(lambda input_shape, **kwargs: None)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"optimizer": "lbfgs"}, "unknown optimizer 'lbfgs'; allowed: adam"),
        ({"pruning_scope": "local"}, "unknown pruning_scope 'local'; allowed: layerwise, global, global_all"),
        ({"conv_rate": 1.0}, "conv_rate=1.0 is outside the allowed range (0, 1)"),
        ({"lr_boundaries": (84_000, 56_000)}, "lr_boundaries=(84000, 56000) must increase strictly"),
        ({"learning_rat": 0.1}, "unknown config field 'learning_rat'"),
    ],
)
def test_a_bad_preset_is_refused_when_registered(change, message):
    with pytest.raises(ValueError) as error:
        zoo.register("bad_model", {**zoo.get_preset("vgg19"), **change})
    assert message in str(error.value)
    assert "bad_model" not in zoo.names()


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_zoo_model_keeps_its_masks_under_xla(name):
    from tf_lottery.masking import pruning

    shape = (32, 32, 3) if name in ("vgg19", "resnet18") else (28, 28, 1)
    model = pruning.wrap(zoo.get_builder(name)(shape, seed=0))
    rng = np.random.default_rng(0)
    pruning.set_masks(model, {n: (rng.random(s) < 0.5).astype(np.float32) for n, s in pruning.kernel_shapes(model).items()})
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=True)
    history = model.fit(rng.random((8, *shape), dtype=np.float32), rng.integers(0, 10, 8), batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert pruning.count_pruned_nonzero(model) == 0
