"""training.py in process: data order, optimizers and schedules, objectives, early stop, and a network
that resumes itself from its checkpoint to the bit-identical result."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tf_lottery_models as zoo
from tf_lottery import config as C
from tf_lottery.data import inputs, inputs as inputs_lib
from tf_lottery.masking import pruning
from tf_lottery.search import training
from tf_lottery.search.run_directory import RunDirectory

from fashion_slices import fashion_slice


def test_the_data_order_is_a_pure_function_of_seed_and_iteration():
    images = np.arange(50, dtype=np.uint8).reshape(50, 1, 1, 1)
    labels = np.arange(50)
    full = [y.numpy().tolist() for _, y in inputs.train_batches(images, labels, 7, seed=3).take(20)]
    for start in (0, 5, 7, 13):
        resumed = [y.numpy().tolist() for _, y in inputs.train_batches(images, labels, 7, seed=3, start_iteration=start).take(5)]
        assert resumed == full[start:start + 5]
    other = [y.numpy().tolist() for _, y in inputs.train_batches(images, labels, 7, seed=4).take(20)]
    assert other != full
    epoch = sorted(sum(full[:8], []))  # 50 examples in batches of 7: 8 batches an epoch, none dropped
    assert epoch == list(range(50))
    x, _ = next(iter(inputs.train_batches(images, labels, 7, seed=3)))
    assert x.dtype == tf.float32 and float(tf.reduce_max(x)) <= 1.0  # uint8 scaled to [0, 1]


def test_schedules_replay_from_an_offset_or_hold_its_rate():
    schedule = training.WarmupPiecewise(1.0, warmup_iterations=0, boundaries=(10, 20))
    shifted = training.Shifted(schedule, 15)
    held = training.Shifted(schedule, 30, hold=True)
    assert [float(schedule(s)) for s in (0, 10, 20)] == pytest.approx([1.0, 0.1, 0.01])
    assert [float(shifted(s)) for s in (0, 4, 5)] == pytest.approx([0.1, 0.1, 0.01])
    assert [float(held(s)) for s in (0, 100)] == pytest.approx([0.01, 0.01])


def test_optimizers_are_fresh_current_keras_classes_with_their_settings():
    cfg = C.TrainingConfig(optimizer="sgd", learning_rate=0.1, momentum=0.5)
    a, b = training.make_optimizer(cfg), training.make_optimizer(cfg)
    assert a is not b and type(a) is keras.optimizers.SGD and a.momentum == 0.5
    for name in C.OPTIMIZERS:
        optimizer = training.make_optimizer(C.TrainingConfig(optimizer=name, learning_rate=0.01))
        assert not type(optimizer).__module__.startswith("tf_keras.src.optimizers.legacy"), name
    serialized = keras.optimizers.serialize(keras.optimizers.AdamW(3e-4, weight_decay=0.01))
    from_dict = training.make_optimizer(C.TrainingConfig(optimizer=serialized, learning_rate=None, momentum=None))
    assert type(from_dict) is keras.optimizers.AdamW and from_dict.weight_decay == 0.01
    lr_rewind = training.make_optimizer(C.TrainingConfig(learning_rate=1.0, lr_boundaries=(10,)), schedule_offset=10)
    assert float(lr_rewind.learning_rate) == pytest.approx(0.1)


def test_early_stop_is_the_minimum_validation_loss_first_on_ties():
    history = [training.Evaluation(i * 10, 1.0, loss, 0.5, 1.0, acc) for i, (loss, acc) in
               enumerate([(0.9, 0.1), (0.5, 0.2), (0.5, 0.3), (0.7, 0.4)], start=1)]
    result = training.summarize(history, 40, 1.0)
    assert (result.early_stop_iteration, result.early_stop_test_accuracy, result.test_accuracy) == (20, 0.2, 0.4)
    with pytest.raises(ValueError, match="no evaluation"):
        training.summarize([], 40, 1.0)


def small(activation=None, extra=None):
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, activation=activation)(inputs)
    if extra == "softmax_layer":
        x = keras.layers.Softmax()(x)
    elif extra == "activation":
        x = keras.layers.Activation("softmax")(x)
    return keras.Model(inputs, x)


@pytest.mark.parametrize("model, probabilities", [
    (small(), False), (small("relu"), False), (small("softmax"), True),
    (small(extra="softmax_layer"), True), (small(extra="activation"), True),
])
def test_a_probability_output_is_detected_wrapped_or_not(model, probabilities):
    assert training.outputs_probabilities(model) is probabilities
    assert training.outputs_probabilities(pruning.wrap(model, warn=False)) is probabilities
    objective = training.default_objective(model, one_hot=False)
    assert objective.loss.get_config()["from_logits"] is (not probabilities)
    assert isinstance(training.default_objective(model, one_hot=True).loss, keras.losses.CategoricalCrossentropy)


def test_a_validation_set_is_required():
    with pytest.raises(ValueError, match="never on the test set"):
        training.train(small(), lambda i: None, None, None, total_iterations=1, eval_every=1)


def test_a_network_resumes_from_its_checkpoint_to_the_identical_result(tmp_path):
    tf.config.experimental.enable_op_determinism()
    splits = fashion_slice(train=600, validation=100, test=100)
    data = inputs_lib.from_splits(splits, batch_size=60)
    config = C.TrainingConfig(iterations=60, eval_every=10, checkpoint_every=20)
    stage = training.Stage(round=0, name="main", seed=7, iterations=60)
    strategy = tf.distribute.get_strategy()

    def network():
        keras.utils.set_random_seed(0)
        model = pruning.wrap(zoo.get_builder("lenet_300_100")((28, 28, 1), seed=0))
        return model, training.default_objective(model, one_hot=False)

    model, objective = network()
    whole = training.train_stage(model, stage, config, data, objective, strategy, log=lambda s: None)
    reference = pruning.snapshot(model)

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if int(self.model.optimizer.iterations.numpy()) == 50:
                raise KeyboardInterrupt

    run = RunDirectory(str(tmp_path / "run"))
    model, objective = network()
    with pytest.raises(KeyboardInterrupt):
        training.train_stage(model, stage, config, data, objective, strategy, run=run, callbacks=[Crash()],
                             log=lambda s: None)
    assert run.load_progress(60)["iteration"] == 40  # the last checkpoint before the crash
    lines = []
    model, objective = network()
    resumed = training.train_stage(model, stage, config, data, objective, strategy, run=run, log=lines.append)
    assert lines == ["resuming round 0 (main) at iteration 40"]
    assert all(np.array_equal(a, b) for a, b in zip(pruning.snapshot(model), reference))
    assert resumed["history"] == whole["history"]
    assert int(pruning.prunable_layers(model)[0].pruning_step.numpy()) == 60  # the step count resumed too


def _tiny_lenet(dropout: float = 0.0):
    keras.utils.set_random_seed(0)
    model = pruning.wrap(zoo.get_builder("lenet_300_100")((28, 28, 1), seed=0, dropout_rate=dropout))
    return model, training.default_objective(model, one_hot=False)


def test_a_model_compiled_once_trains_each_later_network_as_a_fresh_optimizer_would():
    """compile_for_stage resets the optimizer and moves the schedule instead of recompiling (issue 19):
    the second network of a reused model matches, bit for bit, the same network on a freshly compiled model."""
    tf.config.experimental.enable_op_determinism()
    data = inputs_lib.from_splits(fashion_slice(train=300, validation=60, test=60), batch_size=60)
    config = C.TrainingConfig(iterations=20, eval_every=10, checkpoint_every=0, lr_boundaries=(10,), warmup_iterations=5)
    first = training.Stage(round=0, name="main", seed=1, iterations=20)
    second = training.Stage(round=1, name="main", seed=2, iterations=20, schedule_offset=10)
    strategy = tf.distribute.get_strategy()
    quiet = dict(log=lambda s: None)

    model, objective = _tiny_lenet()
    start = pruning.snapshot(model)
    training.train_stage(model, first, config, data, objective, strategy, **quiet)
    optimizer, train_function = model.optimizer, model.train_function
    pruning.restore(model, start)
    reused = training.train_stage(model, second, config, data, objective, strategy, **quiet)
    assert model.optimizer is optimizer and model.train_function is train_function  # no new compile, no retrace
    assert int(optimizer.iterations.numpy()) == 20  # counted from 0 again, not from 20

    fresh_model, fresh_objective = _tiny_lenet()
    pruning.restore(fresh_model, start)
    fresh = training.train_stage(fresh_model, second, config, data, fresh_objective, strategy, **quiet)
    assert fresh_model.optimizer is not optimizer
    assert reused["history"] == fresh["history"]
    assert all(np.array_equal(a, b) for a, b in zip(pruning.snapshot(model), pruning.snapshot(fresh_model)))

    # Compiled by someone else in between: compiled anew, never trained with the other optimizer.
    other = keras.optimizers.SGD(0.5)
    model.compile(optimizer=other, loss=objective.loss)
    training.compile_for_stage(model, second, config, objective, strategy)
    assert model.optimizer is not other and model.optimizer is not optimizer
    assert type(model.optimizer) is keras.optimizers.Adam


def test_a_model_with_dropout_is_compiled_for_every_network():
    """A traced dropout op's random stream starts from the seed set at its trace: each network needs its own."""
    model, objective = _tiny_lenet(dropout=0.5)
    assert training.has_random_layers(model)
    config = C.TrainingConfig(iterations=10, eval_every=10)
    stage = training.Stage(round=0, name="main", seed=1, iterations=10)
    strategy = tf.distribute.get_strategy()
    training.compile_for_stage(model, stage, config, objective, strategy)
    first = model.optimizer
    training.compile_for_stage(model, stage, config, objective, strategy)
    assert model.optimizer is not first


def test_fit_leaves_no_gradient_registration_behind():
    """Each traced train step registers its all-reduce gradient globally, holding the whole graph (issue 19)."""
    from tensorflow.python.framework import ops

    data = inputs_lib.from_splits(fashion_slice(train=120, validation=60, test=60), batch_size=60)
    model, objective = _tiny_lenet()
    before = set(ops._gradient_registry._registry)  # noqa: SLF001
    training.train_stage(model, training.Stage(round=0, name="main", seed=1, iterations=4),
                         C.TrainingConfig(iterations=4, eval_every=2, checkpoint_every=0), data, objective,
                         tf.distribute.get_strategy(), log=lambda s: None)
    added = set(ops._gradient_registry._registry) - before  # noqa: SLF001
    assert not [name for name in added if name.startswith("CustomGradient-")]
