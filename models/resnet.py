"""The paper's "Resnet-18": He et al.'s CIFAR-10 residual net, 3 stages of 3 basic blocks (a Resnet-20)."""

import itertools
from collections.abc import Iterator

import tensorflow as tf
import tf_keras as keras

from tf_lottery_models.registry import glorot_normal, register


def _conv_bn(
    x: tf.Tensor, filters: int, size: int, strides: int, seed: int | None, index: int, name: str
) -> tf.Tensor:
    """Conv (no bias: BatchNorm's beta is the bias) then BatchNorm."""
    x = keras.layers.Conv2D(
        filters,
        size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=glorot_normal(seed, index),
        name=f"{name}_conv",
    )(x)
    return keras.layers.BatchNormalization(name=f"{name}_bn")(x)


def _block(
    x: tf.Tensor, filters: int, strides: int, seed: int | None, indices: Iterator[int], name: str
) -> tf.Tensor:
    """Basic block: conv-BN-relu, conv-BN, add the shortcut, relu.

    The shortcut is a 1x1 conv + BN projection when the shape changes, the identity otherwise.
    """
    out = _conv_bn(x, filters, 3, strides, seed, next(indices), f"{name}_1")
    out = keras.layers.ReLU(name=f"{name}_1_relu")(out)
    out = _conv_bn(out, filters, 3, 1, seed, next(indices), f"{name}_2")
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, strides, seed, next(indices), f"{name}_shortcut")
    out = keras.layers.Add(name=f"{name}_add")([out, shortcut])
    return keras.layers.ReLU(name=f"{name}_relu")(out)


@register(
    "resnet18",
    # Figure 2: SGD 0.1-0.01-0.001, momentum 0.9, 30K iterations / batch 128, "conv 20%, fc 0%"
    # pruned globally (the output layer stays dense). Appendix: drops at 20K and 25K; 20K warmup.
    dict(
        optimizer="sgd",
        learning_rate=0.1,
        momentum=0.9,
        batch_size=128,
        iterations=30_000,
        lr_boundaries=(20_000, 25_000),
        warmup_iterations=20_000,
        conv_rate=0.2,
        fc_rate=0.2,  # no hidden FC layer: the only FC is the output, kept dense below
        output_rate=0.0,
        pruning_scope="global",
    ),
)
def resnet18(
    input_shape: tuple[int, ...], num_classes: int = 10, dropout_rate: float = 0.0, seed: int | None = None
) -> keras.Model:
    """Conv 16; 3 blocks each of [16, 16], [32, 32], [64, 64], stride 2 entering stages 2 and 3;
    global average pool; Dense num_classes (logits)."""
    if dropout_rate:
        raise ValueError(
            f"resnet18 has no hidden FC layer to apply dropout to; got dropout_rate={dropout_rate}"
        )
    indices = itertools.count()
    inputs = keras.Input(shape=input_shape, name="image")
    x = _conv_bn(inputs, 16, 3, 1, seed, next(indices), "stem")
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, filters in enumerate((16, 32, 64), start=1):
        for block in range(1, 4):
            strides = 2 if stage > 1 and block == 1 else 1
            x = _block(x, filters, strides, seed, indices, f"stage{stage}_block{block}")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(
        num_classes, kernel_initializer=glorot_normal(seed, next(indices)), name="output"
    )(x)
    return keras.Model(inputs, outputs, name="resnet18")
