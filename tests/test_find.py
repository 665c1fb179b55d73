"""`find_ticket`'s own rules, one at a time (issue 21: `search.find` was tested only end to end):
where the model comes from, which optimizer is recorded, which loss trains, which inputs are read,
which settings cannot change a result, and which existing runs a new search refuses to resume.

Nothing here trains; the end-to-end behaviour is in test_training, test_resume and the CLI tests.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from tf_lottery import config as C
from tf_lottery.masking import pruning
from tf_lottery.search import find, training
from tf_lottery.search.run_directory import RunDirectory


def small_model(name="small", inputs=(28, 28, 1)):
    keras.utils.set_random_seed(0)
    x = keras.Input(inputs)
    hidden = keras.layers.Dense(20, activation="relu", name="fc1")(keras.layers.Flatten()(x))
    y = keras.layers.Dense(10, name="out")(hidden)
    return keras.Model(x, y, name=name)


# -- where the model comes from ------------------------------------------------------------------
def test_a_model_is_searched_as_given_a_builder_gets_the_runs_seed_and_none_is_the_zoos():
    config = C.override(C.ExperimentConfig(), seed=7)
    model = small_model()
    assert find._build_model(model, config, (28, 28, 1), 10) == (model, "user")
    seen = []

    def builder(seed):
        seen.append(seed)
        return small_model()

    built, source = find._build_model(builder, config, (28, 28, 1), 10)
    assert source == "user" and seen == [7] and isinstance(built, keras.Model)
    zoo, source = find._build_model(None, config, (28, 28, 1), 10)
    assert source == "zoo" and [layer.units for layer in zoo.layers if isinstance(layer, keras.layers.Dense)] == [300, 100, 10]


def test_a_dataset_of_another_shape_is_refused_naming_both_shapes():
    model = small_model()
    find._check_input_shape(model, (28, 28, 1), "fashion_mnist")  # agrees: nothing raised
    with pytest.raises(ValueError, match=r"dataset 'cifar10' has inputs of shape \(32, 32, 3\) but model 'small' takes \(28, 28, 1\)"):
        find._check_input_shape(model, (32, 32, 3), "cifar10")
    find._check_input_shape(model, None, "arrays")  # not known yet: checked when the data are read


def test_the_rank_of_one_example():
    assert find._example_rank(small_model()) == 3
    assert find._example_rank(small_model(inputs=(784,))) == 1

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    assert find._example_rank(Subclassed()) is None  # never called: no input shape yet


# -- the optimizer recorded ----------------------------------------------------------------------
def test_a_users_optimizer_is_recorded_as_its_config_and_replaces_the_rate_and_momentum():
    config = C.ExperimentConfig()
    assert find._with_users_optimizer(config, None) is config
    assert find._with_users_optimizer(config, "RMSprop").training.optimizer == "rmsprop"
    recorded = find._with_users_optimizer(config, keras.optimizers.Adam(learning_rate=0.003)).training
    assert recorded.optimizer["class_name"] == "Adam" and recorded.optimizer["config"]["learning_rate"] == pytest.approx(0.003)
    assert recorded.learning_rate is None and recorded.momentum is None
    # A LossScaleOptimizer is recorded as the optimizer it wraps: compiling under mixed precision adds it back.
    scaled = keras.mixed_precision.LossScaleOptimizer(keras.optimizers.SGD(learning_rate=0.1))
    assert find._with_users_optimizer(config, scaled).training.optimizer["class_name"] == "SGD"


def test_an_optimizer_config_that_is_not_json_is_one_line():
    with pytest.raises(ValueError, match="the optimizer's config cannot be recorded as JSON .*pass a standard Keras optimizer"):
        find._jsonable({"class_name": "SGD", "config": {"learning_rate": object()}})


# -- the loss that trains ------------------------------------------------------------------------
def test_the_loss_given_wins_then_the_compiled_models_then_cross_entropy_on_the_output():
    model = small_model()
    given = find._objective(model, None, "mse", ["mae"], one_hot=False)
    assert given.loss == "mse" and given.metrics == ["mae"]
    compiled = small_model()
    compiled.compile(loss="mean_absolute_error", metrics=["accuracy"])
    lent = find._objective(model, compiled, None, None, one_hot=False)
    assert lent.loss == "mean_absolute_error" and lent.metrics == ["accuracy"]
    default = find._objective(model, None, None, None, one_hot=False)
    reference = training.default_objective(model, False)
    assert type(default.loss) is type(reference.loss) and default.loss.get_config() == reference.loss.get_config()
    assert default.metrics == []


# -- the inputs read -----------------------------------------------------------------------------
def test_inputs_come_from_datasets_then_arrays_then_the_config():
    config = C.override(C.ExperimentConfig(), batch_size=8)
    rng = np.random.default_rng(0)
    pairs = [(rng.random((16, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 16)) for _ in range(3)]
    from_arrays = find._make_inputs(config, None, *pairs, tf.distribute.get_strategy(), 3)
    assert from_arrays.data_source["kind"] == "arrays"
    datasets = [tf.data.Dataset.from_tensor_slices(p) for p in pairs]
    from_datasets = find._make_inputs(config, None, *datasets, tf.distribute.get_strategy(), 3)
    assert from_datasets.data_source["kind"] == "tf.data"


# -- what cannot change a result, and which runs are not resumed ---------------------------------
def test_settings_that_cannot_change_this_search_are_ignored_on_resume():
    sgd = C.override(C.ExperimentConfig(), optimizer="sgd")
    assert find._irrelevant_fields(sgd, {"fc1": "fc", "fc2": "fc"}, "zoo") == ("conv_rate",)
    adam = C.override(C.ExperimentConfig(), optimizer="adam")
    assert find._irrelevant_fields(adam, {"conv": "conv", "fc": "fc"}, "zoo") == ("momentum",)
    assert find._irrelevant_fields(sgd, {"conv": "conv"}, "user") == ("model", "dropout_rate")


def _existing_run(path, config, model):
    wrapped = pruning.wrap(model)
    inputs = type("Inputs", (), {"fingerprint": "abc", "data_source": {"kind": "arrays"}})()
    record = find._record(config, inputs, model, wrapped, "user")
    run = RunDirectory(str(path))
    run.create(record)
    return run, record, pruning.layer_kinds(wrapped)


def test_an_existing_run_resumes_only_with_the_same_settings_model_and_data(tmp_path):
    config = C.ExperimentConfig()
    run, record, kinds = _existing_run(tmp_path / "run", config, small_model())
    assert "experiment" not in find._open_existing(run, config, record, kinds, "user")  # same: resumed as written
    # A setting this network ignores (conv_rate of a network without convolutions) is no difference.
    find._open_existing(run, C.override(config, conv_rate=0.3), record, kinds, "user")
    with pytest.raises(ValueError, match=r"holds a run with different hyperparameters \(.*fc_rate.*\); use another output_dir"):
        find._open_existing(run, C.override(config, fc_rate=0.3), record, kinds, "user")
    other_model = dict(record, model=dict(record["model"], kernels={"fc1": [784, 30], "out": [30, 10]}))
    with pytest.raises(ValueError, match="holds a run of another model"):
        find._open_existing(run, config, other_model, kinds, "user")
    other_data = dict(record, data_fingerprint="def")
    with pytest.raises(ValueError, match="was trained on other data .*abc.*def"):
        find._open_existing(run, config, other_data, kinds, "user")


def test_the_record_of_a_run_names_its_model_its_kernels_and_its_data(tmp_path):
    config = C.ExperimentConfig()
    model = small_model()
    _, record, _ = _existing_run(tmp_path / "run", config, model)
    assert record["model"] == {"source": "user", "name": "small", "input_shape": [28, 28, 1],
                               "kernels": {"fc1": [784, 20], "out": [20, 10]}}
    assert record["data_fingerprint"] == "abc" and record["fingerprint"] == config.fingerprint()
    assert C.ExperimentConfig.from_dict(record["config"]) == config
    assert keras.models.model_from_json(record["architecture"]).count_params() == model.count_params()


def test_a_bad_strategy_or_control_name_is_refused_before_anything_is_built():
    with pytest.raises(ValueError, match="unknown pruning_strategy"):
        find._check_names(C.override(C.ExperimentConfig(), pruning_strategy="largest"))
    with pytest.raises(ValueError, match="unknown control 'main'; allowed: "):
        find._check_names(C.override(C.ExperimentConfig(), controls=("main",)))


# -- op determinism ------------------------------------------------------------------------------
def test_a_deterministic_search_leaves_op_determinism_as_it_found_it():
    from tensorflow.python.framework import config as tf_config

    config = C.override(C.ExperimentConfig(), rounds=2, iterations=4, epochs=None, eval_every=2, batch_size=8,
                        deterministic=True)
    rng = np.random.default_rng(0)
    pairs = [(rng.random((16, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 16)) for _ in range(3)]
    seen = []

    class Witness(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append(tf_config.is_op_determinism_enabled())

    assert not tf_config.is_op_determinism_enabled()
    find.find_ticket(small_model, config, train=pairs[0], validation=pairs[1], test=pairs[2], callbacks=[Witness()],
                     log=lambda line: None)
    assert seen and all(seen)  # on while the search trains
    assert not tf_config.is_op_determinism_enabled()  # off again after it: the user's next training is theirs
    with pytest.raises(ValueError):  # and after a search that fails
        find.find_ticket(small_model, C.override(config, rewind_step=10), train=pairs[0], validation=pairs[1],
                         test=pairs[2], log=lambda line: None)
    assert not tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()  # a user who turned it on keeps it on
    try:
        find.find_ticket(small_model, config, train=pairs[0], validation=pairs[1], test=pairs[2], log=lambda line: None)
        assert tf_config.is_op_determinism_enabled()
    finally:
        tf_config.disable_op_determinism()
