"""Lenet-300-100: the paper's fully-connected MNIST network."""

import tensorflow as tf
import tf_keras as keras

from tf_lottery_models.registry import glorot_normal, layer_seed, register


def fully_connected(
    x: tf.Tensor,
    hidden_units: tuple[int, ...],
    num_classes: int,
    dropout_rate: float,
    seed: int | None,
    first_index: int,
) -> tf.Tensor:
    """Flatten, relu hidden layers (each followed by dropout if asked), then logits named 'output'.

    Layer seeds count up from `first_index` so a caller's earlier layers keep theirs.
    """
    index = first_index
    x = keras.layers.Flatten(name="flatten")(x)
    for number, units in enumerate(hidden_units, start=1):
        x = keras.layers.Dense(
            units, activation="relu", kernel_initializer=glorot_normal(seed, index), name=f"fc{number}"
        )(x)
        index += 1
        if dropout_rate > 0.0:
            x = keras.layers.Dropout(
                dropout_rate, seed=layer_seed(seed, index), name=f"dropout{number}"
            )(x)
            index += 1
    return keras.layers.Dense(
        num_classes, kernel_initializer=glorot_normal(seed, index), name="output"
    )(x)


@register(
    "lenet_300_100",
    # Figure 2: fc 20%; the output layer at half that (output_pruning_rate None).
    dict(optimizer="adam", learning_rate=1.2e-3, batch_size=60, iterations=50_000, fc_rate=0.2),
)
def lenet_300_100(
    input_shape: tuple[int, ...], num_classes: int = 10, dropout_rate: float = 0.0, seed: int | None = None
) -> keras.Model:
    """FC 300, 100, num_classes (logits); 266,200 kernel weights on 28x28x1."""
    inputs = keras.Input(shape=input_shape, name="image")
    outputs = fully_connected(inputs, (300, 100), num_classes, dropout_rate, seed, first_index=0)
    return keras.Model(inputs, outputs, name="lenet_300_100")
