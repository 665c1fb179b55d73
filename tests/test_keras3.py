"""Keras 3 models carried over to tf-keras and back, one-line refusals, and import order."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tf_keras

from tf_lottery.keras3 import convert as keras3
from tf_lottery.masking import pruning

from fashion_slices import fashion_slice

L = keras.layers


@pytest.fixture(scope="module")
def images():
    """200 real Fashion-MNIST test images, uint8 0..255 as float32 (the models rescale them)."""
    return np.asarray(fashion_slice(train=0, validation=0, test=200).test_images, np.float32)


def functional_cnn():
    inputs = keras.Input((28, 28, 1), name="image")
    x = L.Rescaling(1 / 255.0, name="rescale")(inputs)
    x = L.Conv2D(8, 3, padding="same", name="conv1")(x)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.Activation("relu", name="relu1")(x)
    x = L.MaxPooling2D(name="pool1")(x)
    x = L.Conv2D(16, 3, activation="relu", name="conv2")(x)
    x = L.AveragePooling2D(2, name="pool2")(x)
    x = L.Dropout(0.25, name="dropout")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(32, activation="relu", name="fc")(x)
    outputs = L.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="k3_cnn")


def sequential_mlp():
    return keras.Sequential(
        [
            keras.Input((28, 28, 1), name="pixels"),
            L.Rescaling(1 / 255.0, name="rescale"),
            L.Flatten(name="flatten"),
            L.Dense(64, activation="relu", name="hidden"),
            L.Dropout(0.1, name="dropout"),
            L.Dense(10, activation="softmax", name="probs"),
        ],
        name="k3_mlp",
    )


def every_layer_model(images):
    """One model holding every class of the issue's list, and the other supported ones."""
    image = keras.Input((28, 28, 1), name="image")
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    norm = L.Normalization(name="norm")
    norm.adapt(images[:64] / 255.0)
    x = L.Rescaling(1 / 255.0, name="rescale")(image)
    x = norm(x)
    x = L.ZeroPadding2D(1, name="pad")(x)
    x = L.Conv2D(4, 3, name="conv2d")(x)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(name="relu_layer")(x)
    x = L.MaxPooling2D(2, name="maxpool2d")(x)
    a = L.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    b = L.SeparableConv2D(4, 3, padding="same", name="separable")(x)
    x = L.Add(name="add")([a, b])
    x = L.Subtract(name="subtract")([x, a])
    x = L.Multiply(name="multiply")([x, b])
    x = L.Average(name="average")([x, a])
    x = L.Maximum(name="maximum")([x, b])
    x = L.Minimum(name="minimum")([x, a])
    x = L.AveragePooling2D(2, name="avgpool2d")(x)
    x = L.UpSampling2D(2, name="upsample")(x)
    x = L.Permute((2, 1, 3), name="permute")(x)
    g1 = L.GlobalAveragePooling2D(name="gap2d")(x)
    g2 = L.GlobalMaxPooling2D(name="gmp2d")(x)
    s = L.Reshape((49, 16), name="to_1d")(L.Conv2D(16, 1, name="pointwise")(L.MaxPooling2D(2, name="mp")(x)))
    s = L.Conv1D(8, 3, padding="same", name="conv1d")(s)
    s = L.MaxPooling1D(2, name="maxpool1d")(s)
    s = L.AveragePooling1D(2, name="avgpool1d")(s)
    g3 = L.GlobalAveragePooling1D(name="gap1d")(s)
    g4 = L.GlobalMaxPooling1D(name="gmp1d")(s)
    v = L.Reshape((2, 6, 1, 8), name="to_3d")(s)
    v = L.Conv3D(4, (1, 3, 1), padding="same", name="conv3d")(v)
    v = L.MaxPooling3D((1, 2, 1), name="maxpool3d")(v)
    v = L.AveragePooling3D((1, 1, 1), name="avgpool3d")(v)
    g5 = L.GlobalAveragePooling3D(name="gap3d")(v)
    g6 = L.GlobalMaxPooling3D(name="gmp3d")(v)
    e = L.Embedding(20, 4, name="embedding")(tokens)
    g7 = L.Flatten(name="flatten")(L.GlobalAveragePooling1D(name="gap_tokens")(e))
    x = L.Concatenate(name="concat")([g1, g2, g3, g4, g5, g6, g7])
    x = L.LayerNormalization(name="ln")(x)
    x = L.Dense(16, activation="gelu", kernel_regularizer=keras.regularizers.L2(0.01),
                kernel_constraint=keras.constraints.MaxNorm(3.0), name="fc")(x)
    x = L.Dropout(0.2, name="dropout")(x)
    x = L.Activation("tanh", name="tanh")(x)
    x = L.Dense(10, name="logits")(x)
    outputs = L.Softmax(name="softmax")(x)
    return keras.Model([image, tokens], outputs, name="every_layer")


def leaves(model):
    """(name, layer) of every layer, descending into nested models."""
    out = []
    for layer in model.layers:
        out += leaves(layer) if hasattr(layer, "layers") else [(layer.name, layer)]
    return out


def assert_same_weights(a, b):
    la, lb = leaves(a), leaves(b)
    assert [n for n, _ in la] == [n for n, _ in lb]
    for (name, x), (_, y) in zip(la, lb):
        wx, wy = x.get_weights(), y.get_weights()
        assert len(wx) == len(wy), name
        for u, v in zip(wx, wy):
            assert u.dtype == v.dtype and np.array_equal(u, v), name


def perturb_batchnorm(model):
    """Non-trivial moving statistics, so inference differs from the initial identity."""
    rng = np.random.default_rng(1)
    for _, layer in leaves(model):
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([gamma * 1.5, beta + 0.1, mean + rng.normal(size=mean.shape).astype("float32"), var * 2.0])


@pytest.mark.parametrize("build", [functional_cnn, sequential_mlp])
def test_keras3_model_rebuilt_as_tf_keras_is_equal(build, images):
    model = build()
    perturb_batchnorm(model)
    legacy = keras3.to_tf_keras(model)

    assert isinstance(legacy, tf_keras.Model)
    assert isinstance(legacy, tf_keras.Sequential) == isinstance(model, keras.Sequential)
    assert [layer.name for layer in legacy.layers] == [layer.name for layer in model.layers]
    assert legacy.name == model.name
    assert_same_weights(model, legacy)
    np.testing.assert_allclose(legacy.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5)


@pytest.mark.parametrize("build", [functional_cnn, sequential_mlp])
def test_round_trip_gives_back_an_equal_keras3_model(build, images):
    model = build()
    perturb_batchnorm(model)
    expected = model.predict(images, verbose=0)
    legacy = keras3.to_tf_keras(model)
    for back in (keras3.to_keras3(legacy), keras3.to_keras3(legacy, template=model)):
        assert keras3.is_keras3_model(back) and back is not model
        assert type(back) is type(model)
        assert [layer.name for layer in back.layers] == [layer.name for layer in model.layers]
        assert_same_weights(model, back)
        np.testing.assert_allclose(back.predict(images, verbose=0), expected, atol=1e-5)
    # the template's configs are kept exactly
    assert back.get_config() == model.get_config()


def test_every_supported_layer_class_converts(images):
    model = every_layer_model(images)
    perturb_batchnorm(model)
    used = {type(layer).__name__ for layer in model.layers}
    issue_list = {
        "Dense", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D", "SeparableConv2D", "MaxPooling2D",
        "AveragePooling2D", "BatchNormalization", "LayerNormalization", "Dropout", "Flatten", "Reshape",
        "Rescaling", "Normalization", "Activation", "Add", "Concatenate", "Embedding", "InputLayer",
    }
    assert issue_list <= used and used == set(keras3.SUPPORTED_LAYERS)

    inputs = [images[:32], np.random.default_rng(0).integers(0, 20, (32, 6)).astype("int32")]
    legacy = keras3.to_tf_keras(model)
    assert [layer.name for layer in legacy.layers] == [layer.name for layer in model.layers]
    assert_same_weights(model, legacy)
    fc = legacy.get_layer("fc")
    assert isinstance(fc.kernel_regularizer, tf_keras.regularizers.L2) and np.isclose(fc.kernel_regularizer.l2, 0.01)
    assert isinstance(fc.kernel_constraint, tf_keras.constraints.MaxNorm) and fc.kernel_constraint.max_value == 3.0
    np.testing.assert_allclose(legacy.predict(inputs, verbose=0), model.predict(inputs, verbose=0), atol=1e-5)
    back = keras3.to_keras3(legacy)
    np.testing.assert_allclose(back.predict(inputs, verbose=0), model.predict(inputs, verbose=0), atol=1e-5)


def test_nested_models_stay_nested_with_their_names(images):
    block = keras.Sequential([L.Conv2D(4, 3, name="block_conv"), L.BatchNormalization(name="block_bn")], name="block")
    inputs = keras.Input((28, 28, 1), name="image")
    x = block(L.Rescaling(1 / 255.0, name="rescale")(inputs))
    outputs = L.Dense(10, name="logits")(L.Flatten(name="flatten")(x))
    model = keras.Model(inputs, outputs, name="outer")
    perturb_batchnorm(model)

    legacy = keras3.to_tf_keras(model)
    nested = legacy.get_layer("block")
    assert isinstance(nested, tf_keras.Sequential) and [l.name for l in nested.layers] == ["block_conv", "block_bn"]
    assert_same_weights(model, legacy)
    np.testing.assert_allclose(legacy.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-5)
    for back in (keras3.to_keras3(legacy), keras3.to_keras3(legacy, template=model)):
        assert isinstance(back.get_layer("block"), keras.Sequential)
        assert_same_weights(model, back)


def test_mixed_precision_layers_keep_their_policy(images):
    inputs = keras.Input((28, 28, 1))
    x = L.Flatten()(L.Rescaling(1 / 255.0, dtype="mixed_float16")(inputs))
    x = L.Dense(32, activation="relu", dtype="mixed_float16", name="hidden")(x)
    outputs = L.Dense(10, dtype="float32", name="logits")(x)
    model = keras.Model(inputs, outputs)

    legacy = keras3.to_tf_keras(model)
    assert legacy.get_layer("hidden").dtype_policy.name == "mixed_float16"
    assert legacy.get_layer("logits").dtype_policy.name == "float32"
    assert_same_weights(model, legacy)
    np.testing.assert_allclose(legacy.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-2)
    assert keras3.to_keras3(legacy).get_layer("hidden").dtype_policy.name == "mixed_float16"


def test_a_masked_ticket_comes_back_to_keras3_with_exact_zeros(images):
    model = functional_cnn()
    perturb_batchnorm(model)
    wrapped = pruning.wrap(keras3.to_tf_keras(model))
    rng = np.random.default_rng(0)
    masks = {name: (rng.random(m.shape) < 0.3).astype(np.float32) for name, m in pruning.get_masks(wrapped).items()}
    pruning.set_masks(wrapped, masks)
    expected = wrapped.predict(images, verbose=0)

    for back in (keras3.to_keras3(wrapped), keras3.to_keras3(wrapped, template=model)):
        assert keras3.is_keras3_model(back)
        assert [l.name for l in back.layers] == [l.name for l in model.layers]
        np.testing.assert_allclose(back.predict(images, verbose=0), expected, atol=1e-5)
        for name, mask in masks.items():
            kernel = back.get_layer(name).kernel.numpy()
            assert np.all(kernel[mask == 0] == 0) and np.count_nonzero(kernel[mask == 1]) == np.sum(mask)
    # Masks are applied on the way out even if a pruned weight were non-zero in the wrapper.
    kernel = wrapped.get_layer("prune_low_magnitude_fc").pruning_vars[0][0]
    kernel.assign(np.where(masks["fc"] == 0, 1.0, kernel.numpy()))
    assert np.all(keras3.to_keras3(wrapped).get_layer("fc").kernel.numpy()[masks["fc"] == 0] == 0)


def assert_refused(model_or_fn, *fragments, convert=keras3.to_tf_keras):
    with pytest.raises(ValueError) as info:
        convert(model_or_fn)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def with_layer(layer, shape=(6, 4)):
    inputs = keras.Input(shape, name="x")
    return keras.Model(inputs, L.Dense(2, name="head")(L.Flatten(name="flat")(layer(inputs))), name="holder")


class Custom(L.Layer):
    def call(self, x):
        return x * 2.0


class MyModel(keras.Model):
    def __init__(self):
        super().__init__(name="my_model")
        self.dense = L.Dense(3)

    def call(self, x):
        return self.dense(x)


@pytest.mark.parametrize(
    "layer, class_path",
    [
        (L.LSTM(3, return_sequences=True, name="my_rnn"), "keras.layers.LSTM"),
        (L.GRU(3, return_sequences=True, name="my_rnn"), "keras.layers.GRU"),
        (L.SimpleRNN(3, return_sequences=True, name="my_rnn"), "keras.layers.SimpleRNN"),
        (L.Lambda(lambda x: x + 1.0, name="my_lambda"), "keras.layers.Lambda"),
        (Custom(name="my_custom"), "test_keras3.Custom"),
        (L.EinsumDense("abc,cd->abd", output_shape=(6, 3), name="my_einsum"), "keras.layers.EinsumDense"),
    ],
)
def test_unsupported_layer_classes_are_refused_in_one_line(layer, class_path):
    message = assert_refused(with_layer(layer), f"layer '{layer.name}' ({class_path}) cannot be carried over to tf-keras")
    assert "supported: Activation, Add" in message


def test_multi_head_attention_is_refused_in_one_line():
    inputs = keras.Input((6, 4))
    outputs = L.MultiHeadAttention(2, 4, name="attention")(inputs, inputs)
    assert_refused(keras.Model(inputs, outputs), "layer 'attention' (keras.layers.MultiHeadAttention) cannot be carried")


def test_ops_on_tensors_are_refused_in_one_line():
    inputs = keras.Input((4,))
    outputs = L.Dense(2, name="d")(keras.ops.exp(inputs))
    assert_refused(keras.Model(inputs, outputs), "operation 'exp' (keras.src.ops.numpy.Exp) cannot be carried", "Activation")


def test_subclassed_and_unbuilt_models_are_refused_in_one_line():
    model = MyModel()
    model(np.zeros((1, 4), np.float32))
    assert_refused(model, "model 'my_model' (test_keras3.MyModel) is a subclassed model")
    assert_refused(keras.Sequential([L.Dense(3)], name="unbuilt"), "model 'unbuilt' is not built")
    assert_refused(tf_keras.Sequential([tf_keras.layers.Dense(3)]), "expected a Keras 3 model, got tf_keras")


@pytest.mark.filterwarnings("ignore::UserWarning")  # Keras 3 on rms_scaling and on quantizing Flatten
def test_settings_tf_keras_lacks_are_refused_in_one_line():
    assert_refused(with_layer(L.Dense(3, activation="hard_sigmoid", name="hs")),
                   "layer 'hs' (keras.layers.Dense) uses activation 'hard_sigmoid'")
    assert_refused(with_layer(L.LayerNormalization(rms_scaling=True, name="rms")),
                   "layer 'rms' (keras.layers.LayerNormalization) sets rms_scaling=True")
    lora = with_layer(L.Dense(3, name="lora"))
    lora.get_layer("lora").enable_lora(2)
    assert_refused(lora, "layer 'lora' (keras.layers.Dense) sets lora_rank=2")
    quantized = with_layer(L.Dense(3, name="q"))
    quantized.quantize("int8")
    assert_refused(quantized, "layer 'q' (keras.layers.Dense) has dtype policy 'int8_from_float32'")


def test_tf_keras_layers_keras3_lacks_are_refused_and_templates_must_match():
    inputs = tf_keras.Input((6, 4))
    legacy = tf_keras.Model(inputs, tf_keras.layers.LSTM(2, name="old_rnn")(inputs))
    assert_refused(legacy, "layer 'old_rnn' (tf_keras.layers.LSTM) cannot be carried over to Keras 3",
                   convert=keras3.to_keras3)
    other = sequential_mlp()
    assert_refused(keras3.to_tf_keras(functional_cnn()), "template 'k3_mlp' does not match",
                   convert=lambda m: keras3.to_keras3(m, template=other))


def run_python(code: str, env=None) -> subprocess.Popen:
    import os

    environment = dict(os.environ)
    environment.pop("TF_USE_LEGACY_KERAS", None)
    environment.update(env or {})
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment)


def finished(process: subprocess.Popen) -> tuple:
    stdout, stderr = process.communicate(timeout=240)
    return process.returncode, stdout, stderr


def test_is_keras3_model_imports_neither_keras_nor_tensorflow():
    code, stdout, stderr = finished(run_python(
        "import sys; from tf_lottery.keras3 import convert as keras3; "
        "print(keras3.is_keras3_model(object()), 'keras' in sys.modules, 'tensorflow' in sys.modules)"
    ))
    assert code == 0 and stdout.split() == ["False", "False", "False"], stderr


def test_other_keras_backends_are_refused_in_one_line(monkeypatch):
    # No JAX or PyTorch here, so the backend is faked; the check reads keras.backend.backend().
    model = sequential_mlp()
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    assert_refused(model, "Keras backend is 'jax'; models can be carried over to tf-keras only from the TensorFlow backend")


IMPORT_ORDERS = {
    "tensorflow, keras, tf_lottery": "import tensorflow as tf; import keras; import tf_lottery",
    "tf_lottery, tensorflow, keras": "import tf_lottery; import tensorflow as tf; import keras",
    "keras, tf_lottery, tensorflow": "import keras; import tf_lottery; import tensorflow as tf",
}

SEARCH_THEN_KERAS3 = """
    import numpy as np, tf_keras
    from tf_lottery.keras3 import convert as keras3
    from tf_lottery.masking import pruning
    from tf_lottery.masking.tfmot import tfmot

    x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32"); y = (x[:, 0] > 0).astype("int32")
    # A short pruned training round on a carried-over Keras 3 model: tf-keras + TF-MOT.
    user = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)])
    wrapped = pruning.wrap(keras3.to_tf_keras(user))
    pruning.set_masks(wrapped, {n: (np.arange(m.size).reshape(m.shape) % 2).astype("float32")
                                for n, m in pruning.get_masks(wrapped).items()})
    wrapped.compile(pruning.masked_optimizer(tf_keras.optimizers.Adam(0.01), wrapped),
                    tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    wrapped.fit(x, y, epochs=2, batch_size=16, verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    assert pruning.count_pruned_nonzero(wrapped) == 0
    ticket = keras3.to_keras3(wrapped, template=user)
    # Then unrelated Keras 3 code trains in the same process, and tf.keras is still that Keras 3.
    other = tf.keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"), tf.keras.layers.Dense(1)])
    other.compile(keras.optimizers.Adam(), "mse")
    other.fit(x, y.astype("float32"), epochs=1, verbose=0)
    assert tf.keras.Model is keras.Model
    print(keras.__version__, tf.keras.__version__, type(ticket).__module__, type(other).__module__)
"""


def test_import_order_does_not_matter_for_keras3_users():
    processes = {name: run_python(imports + "\n" + textwrap.dedent(SEARCH_THEN_KERAS3))
                 for name, imports in IMPORT_ORDERS.items()}
    for name, process in processes.items():
        code, stdout, stderr = finished(process)
        assert code == 0, f"{name}: {stderr[-3000:]}"
        assert "imported before tf_lottery" not in stderr, name  # the old import-order warning is gone
        keras_version, tf_keras_version, ticket_module, tf_keras_model_module = stdout.split()[-4:]
        assert keras_version.startswith("3.") and tf_keras_version.startswith("3."), name
        assert ticket_module.startswith("keras.") and tf_keras_model_module.startswith("keras."), name
