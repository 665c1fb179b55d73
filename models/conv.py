"""Conv-2, Conv-4 and Conv-6: the paper's VGG-like CIFAR-10 networks with an FC 256, 256 head."""

import tf_keras as keras

from tf_lottery_models.lenet import fully_connected
from tf_lottery_models.registry import glorot_normal, register


def _conv_net(
    name: str,
    filters_per_stage: tuple[int, ...],
    input_shape: tuple[int, ...],
    num_classes: int,
    dropout_rate: float,
    seed: int | None,
) -> keras.Model:
    """Per stage two 3x3 'same' relu convs and a 2x2 max pool, then FC 256, 256, num_classes.

    Pooling floors odd sizes ('valid'), so Conv-6 on 28x28 goes 28 -> 14 -> 7 -> 3.
    """
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    convs = 0
    for stage, filters in enumerate(filters_per_stage, start=1):
        for _ in range(2):
            x = keras.layers.Conv2D(
                filters,
                3,
                padding="same",
                activation="relu",
                kernel_initializer=glorot_normal(seed, convs),
                name=f"conv{convs + 1}",
            )(x)
            convs += 1
        x = keras.layers.MaxPooling2D(2, name=f"pool{stage}")(x)
    outputs = fully_connected(x, (256, 256), num_classes, dropout_rate, seed, first_index=convs)
    return keras.Model(inputs, outputs, name=name)


@register(
    "conv2",
    dict(
        optimizer="adam",
        learning_rate=2e-4,
        batch_size=60,
        iterations=20_000,
        conv_rate=0.1,
        fc_rate=0.2,
    ),
)
def conv2(
    input_shape: tuple[int, ...], num_classes: int = 10, dropout_rate: float = 0.0, seed: int | None = None
) -> keras.Model:
    """Conv 64, 64, pool; FC 256, 256, num_classes."""
    return _conv_net("conv2", (64,), input_shape, num_classes, dropout_rate, seed)


@register(
    "conv4",
    dict(
        optimizer="adam",
        learning_rate=3e-4,
        batch_size=60,
        iterations=25_000,
        conv_rate=0.1,
        fc_rate=0.2,
    ),
)
def conv4(
    input_shape: tuple[int, ...], num_classes: int = 10, dropout_rate: float = 0.0, seed: int | None = None
) -> keras.Model:
    """Conv 64, 64, pool, 128, 128, pool; FC 256, 256, num_classes."""
    return _conv_net("conv4", (64, 128), input_shape, num_classes, dropout_rate, seed)


@register(
    "conv6",
    dict(
        optimizer="adam",
        learning_rate=3e-4,
        batch_size=60,
        iterations=30_000,
        conv_rate=0.15,
        fc_rate=0.2,
    ),
)
def conv6(
    input_shape: tuple[int, ...], num_classes: int = 10, dropout_rate: float = 0.0, seed: int | None = None
) -> keras.Model:
    """Conv 64, 64, pool, 128, 128, pool, 256, 256, pool; FC 256, 256, num_classes."""
    return _conv_net("conv6", (64, 128, 256), input_shape, num_classes, dropout_rate, seed)
