"""VGG-19 for CIFAR-10 (the paper's variant): BatchNorm after every conv, global average pool, one FC."""

import tf_keras as keras

from tf_lottery_models.registry import glorot_normal, register

# Filters per conv; "pool" is a 2x2 max pool.
_PLAN = (
    *(64, 64, "pool"),
    *(128, 128, "pool"),
    *(256, 256, 256, 256, "pool"),
    *(512, 512, 512, 512, "pool"),
    *(512, 512, 512, 512),
)


@register(
    "vgg19",
    # Figure 2: "conv 20%, fc 0%" pruned globally; the only FC layer is the output, which stays dense.
    # Appendix: 112K iterations, 10x drops at 56K and 84K; tickets at rate 0.1 need 10K warmup.
    dict(
        optimizer="sgd",
        learning_rate=0.1,
        momentum=0.9,
        batch_size=64,
        iterations=112_000,
        lr_boundaries=(56_000, 84_000),
        warmup_iterations=10_000,
        conv_rate=0.2,
        fc_rate=0.2,  # no hidden FC layer: the only FC is the output, kept dense below
        output_rate=0.0,
        pruning_scope="global",
    ),
)
def vgg19(
    input_shape: tuple[int, ...], num_classes: int = 10, dropout_rate: float = 0.0, seed: int | None = None
) -> keras.Model:
    """16 3x3 convs (conv, BN, relu) in 5 stages, global average pool, Dense num_classes.

    A max pool is skipped when the feature map is already smaller than 2x2, so inputs smaller
    than CIFAR's 32x32 still build (28x28 pools to 14, 7, 3, 1; 8x8 skips the last pool).
    """
    if dropout_rate:
        raise ValueError(
            f"vgg19 has no hidden FC layer to apply dropout to; got dropout_rate={dropout_rate}"
        )
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    convs = pools = 0
    for step in _PLAN:
        if step == "pool":
            pools += 1
            if min(x.shape[1], x.shape[2]) >= 2:
                x = keras.layers.MaxPooling2D(2, name=f"pool{pools}")(x)
            continue
        convs += 1
        x = keras.layers.Conv2D(
            step,
            3,
            padding="same",
            use_bias=False,  # BatchNorm's beta is the bias.
            kernel_initializer=glorot_normal(seed, convs - 1),
            name=f"conv{convs}",
        )(x)
        x = keras.layers.BatchNormalization(name=f"bn{convs}")(x)
        x = keras.layers.ReLU(name=f"relu{convs}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = keras.layers.Dense(
        num_classes, kernel_initializer=glorot_normal(seed, convs), name="output"
    )(x)
    return keras.Model(inputs, outputs, name="vgg19")
