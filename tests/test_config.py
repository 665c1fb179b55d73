"""The experiment config (tf_lottery.config) and the flags generated from it (tf_lottery.cli.flags).

Only the preset tests (`tf_lottery.from_preset`, the zoo's) and the flag tests import the model zoo (and so TensorFlow); the rest is pure Python.
"""

import dataclasses
import json

import numpy as np
import pytest
from absl import flags
from hypothesis import given, settings
from hypothesis import strategies as st

import tf_lottery
from tf_lottery import config as C
from tf_lottery.cli import flags as F

SECTIONS = list(C.SECTIONS.items())
ALL_FIELDS = [f.name for _, kind in SECTIONS for f in dataclasses.fields(kind)]
SGD_CONFIG = {"class_name": "SGD", "config": {"learning_rate": 0.1, "momentum": 0.9}}

# A valid value different from the default for every field: the fingerprint tests change each one.
CHANGED = {
    "model": "conv2", "dropout_rate": 0.5,
    "dataset": "mnist", "data_dir": "/data", "validation_size": 1000, "train_subset": 100,
    "optimizer": "sgd", "learning_rate": 0.1, "momentum": 0.5, "batch_size": 128, "epochs": 3, "iterations": 1000,
    "lr_boundaries": (10,), "warmup_iterations": 5, "eval_every": 50, "checkpoint_every": 0, "jit_compile": True,
    "rounds": 3, "fc_rate": 0.3, "conv_rate": 0.2, "output_rate": 0.0, "pruning_scope": "global",
    "pruning_strategy": "snip", "schedule": "one_shot", "rewind_step": 10, "retrain": "finetune",
    "controls": ("random_reinit",), "keep_one_weight": True, "granularity": "block", "score_batches": "first",
    "layer_rates": ("fc1=0.3",),
    "strategy": "mirrored", "tpu": "local", "seed": 7, "deterministic": True, "worker_timeout": 10.0,
}


def one_line_error(build, *args, **kwargs) -> str:
    with pytest.raises(ValueError) as info:
        build(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- fields --------------------------------------------------------------------------------------


@pytest.mark.parametrize("section, kind", SECTIONS)
def test_every_field_has_help_text(section, kind):
    for field in dataclasses.fields(kind):
        text = field.metadata.get("help")
        assert isinstance(text, str) and len(text) > 10, f"{section}.{field.name} has no help text"


def test_field_names_are_unique_across_sections():
    assert len(ALL_FIELDS) == len(set(ALL_FIELDS))
    assert list(C.ExperimentConfig().flat()) == ALL_FIELDS


def test_changed_values_cover_every_field():
    assert set(CHANGED) == set(ALL_FIELDS)
    flat = C.ExperimentConfig().flat()
    assert all(CHANGED[name] != flat[name] for name in ALL_FIELDS)


def test_setting_refuses_a_mutable_default():
    for default in ([], {}, set()):
        with pytest.raises(TypeError, match="tuple default"):
            C.setting(default, "help")


def test_section_of_finds_each_field():
    assert C.section_of("fc_rate") == "pruning"
    assert C.section_of("seed") == "runtime"
    assert C.section_of("model") == "model"
    assert C.section_of("validation_size") == "data"
    assert C.section_of("jit_compile") == "training"


# -- validation on construction ------------------------------------------------------------------

RATE = "is outside the allowed range (0, 1)"
OUTPUT_RATE = "is outside the allowed range [0, 1) (0 leaves the layer dense)"


@pytest.mark.parametrize(
    "kind, values, message",
    [
        # rates
        (C.PruningConfig, {"fc_rate": 0.0}, "fc_rate=0.0 " + RATE),
        (C.PruningConfig, {"fc_rate": 1.0}, "fc_rate=1.0 " + RATE),
        (C.PruningConfig, {"fc_rate": -0.1}, "fc_rate=-0.1 " + RATE),
        (C.PruningConfig, {"fc_rate": float("nan")}, "fc_rate=nan " + RATE),
        (C.PruningConfig, {"fc_rate": True}, "fc_rate=True " + RATE),
        (C.PruningConfig, {"fc_rate": "0.2"}, "fc_rate='0.2' " + RATE),
        (C.PruningConfig, {"conv_rate": 1.5}, "conv_rate=1.5 " + RATE),
        (C.PruningConfig, {"output_rate": 1.0}, "output_rate=1.0 " + OUTPUT_RATE),
        (C.PruningConfig, {"output_rate": -0.5}, "output_rate=-0.5 " + OUTPUT_RATE),
        (C.ModelConfig, {"dropout_rate": 1.0}, "dropout_rate=1.0 " + RATE),
        (C.ModelConfig, {"dropout_rate": -0.2}, "dropout_rate=-0.2 " + RATE),
        (C.TrainingConfig, {"momentum": 1.0}, "momentum=1.0 is outside the allowed range [0, 1)"),
        (C.TrainingConfig, {"momentum": -0.1}, "momentum=-0.1 is outside the allowed range [0, 1)"),
        # choices
        (C.PruningConfig, {"pruning_scope": "local"}, "unknown pruning_scope 'local'; allowed: layerwise, global, global_all"),
        (C.PruningConfig, {"schedule": "gradual"}, "unknown schedule 'gradual'; allowed: iterative, one_shot"),
        (C.PruningConfig, {"retrain": "rewind"}, "unknown retrain 'rewind'; allowed: weight_rewind, lr_rewind, finetune"),
        (C.RuntimeConfig, {"strategy": "gpu"}, "unknown strategy 'gpu'; allowed: default, one_device, mirrored, multi_worker, tpu"),
        (C.TrainingConfig, {"optimizer": "lbfgs"}, "unknown optimizer 'lbfgs'; allowed: " + ", ".join(C.OPTIMIZERS)),
        (C.TrainingConfig, {"optimizer": "Adam"}, "unknown optimizer 'Adam'; allowed: " + ", ".join(C.OPTIMIZERS)),
        # integers and their bounds
        (C.PruningConfig, {"rounds": 0}, "rounds=0 must be an integer in 1..10000"),
        (C.PruningConfig, {"rounds": 2.0}, "rounds=2.0 must be an integer in 1..10000"),
        (C.PruningConfig, {"rounds": True}, "rounds=True must be an integer in 1..10000"),
        (C.PruningConfig, {"rewind_step": -1}, "rewind_step=-1 must be an integer in 0..100000000"),
        (C.RuntimeConfig, {"seed": -1}, "seed=-1 must be an integer in 0..4294967295"),
        (C.RuntimeConfig, {"seed": 2**32}, "seed=4294967296 must be an integer in 0..4294967295"),
        (C.RuntimeConfig, {"seed": "1"}, "seed='1' must be an integer in 0..4294967295"),
        (C.DataConfig, {"validation_size": 0}, "validation_size=0 must be an integer in 1..100000000"),
        (C.DataConfig, {"validation_size": None}, "validation_size=None must be an integer in 1..100000000"),
        (C.DataConfig, {"train_subset": 0}, "train_subset=0 must be an integer in 1..100000000"),
        (C.TrainingConfig, {"batch_size": 0}, "batch_size=0 must be an integer in 1..1048576"),
        (C.TrainingConfig, {"iterations": 0}, "iterations=0 must be an integer in 1..100000000"),
        (C.TrainingConfig, {"epochs": 0}, "epochs=0 must be an integer in 1..100000"),
        (C.TrainingConfig, {"eval_every": 0}, "eval_every=0 must be an integer in 1..100000000"),
        (C.TrainingConfig, {"checkpoint_every": -1}, "checkpoint_every=-1 must be an integer in 0..100000000"),
        (C.TrainingConfig, {"warmup_iterations": -1}, "warmup_iterations=-1 must be an integer in 0..100000000"),
        # numbers, flags, strings
        (C.TrainingConfig, {"learning_rate": 0}, "learning_rate=0 must be a number in (0, 1000]"),
        (C.TrainingConfig, {"learning_rate": float("inf")}, "learning_rate=inf must be a number in (0, 1000]"),
        (C.TrainingConfig, {"learning_rate": None}, "learning_rate=None needs an optimizer config; give a positive number"),
        (C.RuntimeConfig, {"worker_timeout": 0}, "worker_timeout=0 must be a number in (0, 86400]"),
        (C.RuntimeConfig, {"deterministic": 1}, "deterministic=1 must be True or False"),
        (C.TrainingConfig, {"jit_compile": "yes"}, "jit_compile='yes' must be True or False"),
        (C.ModelConfig, {"model": ""}, "model='' must be a model zoo name"),
        (C.DataConfig, {"dataset": ""}, "dataset='' must be a dataset name"),
        (C.DataConfig, {"data_dir": ""}, "data_dir='' must be a non-empty path (or None)"),
        # training budget and schedule
        (C.TrainingConfig, {"iterations": None, "epochs": None}, "give either epochs or iterations (both are unset)"),
        (C.TrainingConfig, {"lr_boundaries": (200, 100)}, "lr_boundaries=(200, 100) must increase strictly"),
        (C.TrainingConfig, {"lr_boundaries": (100, 100)}, "lr_boundaries=(100, 100) must increase strictly"),
        (C.TrainingConfig, {"lr_boundaries": (0, 100)}, "lr_boundaries=0 must be an integer in 1..100000000"),
        # controls
        (C.PruningConfig, {"controls": "random_reinit,random_reinit"}, "controls=random_reinit,random_reinit names a control twice"),
    ],
)
def test_construction_refuses_a_bad_value_in_one_line(kind, values, message):
    assert one_line_error(kind, **values) == message


@pytest.mark.parametrize("name", ["learning_rate", "momentum"])
def test_an_optimizer_config_carries_its_own_learning_rate_and_momentum(name):
    others = {"learning_rate": None, "momentum": None}
    given = dict(others, **{name: 0.5})
    message = one_line_error(C.TrainingConfig, optimizer=SGD_CONFIG, **given)
    assert message == f"{name}=0.5 cannot be combined with an optimizer config, which carries its own; set {name}=None"
    training = C.TrainingConfig(optimizer=SGD_CONFIG, **others)
    assert training.optimizer == SGD_CONFIG


@pytest.mark.parametrize("optimizer", [{"class_name": "SGD"}, {"config": {}}, {"class_name": 1, "config": {}},
                                       {"class_name": "SGD", "config": "lr=0.1"}])
def test_an_optimizer_config_must_look_like_keras_serialize(optimizer):
    message = one_line_error(C.TrainingConfig, optimizer=optimizer, learning_rate=None, momentum=None)
    assert message.startswith("optimizer config must be {'class_name': ..., 'config': {...}}")


def test_an_optimizer_object_points_to_find_ticket():
    """A config is data (it is written to config.json); the object itself goes to find_ticket."""

    class RMSprop:  # stands for keras.optimizers.RMSprop: any object that is neither a name nor a config
        pass

    message = one_line_error(C.TrainingConfig, optimizer=RMSprop())
    assert message == ("optimizer=RMSprop object: a config holds an optimizer name or keras.optimizers.serialize(opt); "
                       "pass the object itself as find_ticket(optimizer=...)")


def test_values_at_the_bounds_are_accepted():
    C.RuntimeConfig(seed=0)
    C.RuntimeConfig(seed=2**32 - 1)
    C.DataConfig(validation_size=1, train_subset=1)
    C.PruningConfig(output_rate=0.0, rewind_step=0, rounds=1, fc_rate=0.999, conv_rate=1e-6)
    C.ModelConfig(dropout_rate=0.0)
    C.TrainingConfig(momentum=None, checkpoint_every=0, warmup_iterations=0, lr_boundaries=(1, 2))
    C.TrainingConfig(momentum=0.0)
    C.TrainingConfig(iterations=None, epochs=1)
    C.TrainingConfig(iterations=10, epochs=1)


def test_numpy_numbers_are_numbers():
    assert C.PruningConfig(fc_rate=np.float32(0.25), rounds=np.int64(3)).rounds == 3
    assert C.RuntimeConfig(seed=np.uint32(2**32 - 1)).seed == 2**32 - 1
    assert C.TrainingConfig(learning_rate=np.float32(0.5), momentum=np.float64(0.5)).learning_rate == 0.5


@pytest.mark.parametrize("momentum, accepted", [(np.float32(0.5), True), (False, False)])
def test_momentum_is_a_number_like_every_other_rate(momentum, accepted):
    if accepted:
        assert C.TrainingConfig(momentum=momentum).momentum == 0.5
    else:
        assert one_line_error(C.TrainingConfig, momentum=momentum).startswith("momentum=False")


@pytest.mark.parametrize("kind, values, name", [
    (C.TrainingConfig, {"lr_boundaries": "100,abc"}, "lr_boundaries"),
    (C.TrainingConfig, {"lr_boundaries": 100}, "lr_boundaries"),
    (C.PruningConfig, {"controls": 5}, "controls"),
])
def test_a_list_field_that_is_no_list_is_named(kind, values, name):
    assert one_line_error(kind, **values).startswith(f"{name}=")


def test_experiment_config_refuses_a_section_of_the_wrong_type():
    message = one_line_error(C.ExperimentConfig, pruning=C.TrainingConfig())
    assert message.startswith("pruning=TrainingConfig(") and message.endswith("must be a PruningConfig")


# -- normalization -------------------------------------------------------------------------------


@pytest.mark.parametrize("controls", ["random_reinit,random_prune", " random_reinit , random_prune ,",
                                      ["random_reinit", "random_prune"], ("random_reinit", "random_prune")])
def test_controls_become_a_tuple(controls):
    assert C.PruningConfig(controls=controls).controls == ("random_reinit", "random_prune")


def test_empty_controls_are_an_empty_tuple():
    assert C.PruningConfig(controls="").controls == ()
    assert C.PruningConfig(controls=[]).controls == ()


@pytest.mark.parametrize("boundaries", ["100,200", ["100", "200"], [100, 200], (100, 200)])
def test_lr_boundaries_become_a_tuple_of_ints(boundaries):
    training = C.TrainingConfig(lr_boundaries=boundaries)
    assert training.lr_boundaries == (100, 200)
    assert all(type(b) is int for b in training.lr_boundaries)


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        C.PruningConfig().fc_rate = 0.5


# -- override ------------------------------------------------------------------------------------


def test_override_replaces_fields_by_their_flat_names():
    base = C.ExperimentConfig()
    changed = C.override(base, fc_rate=0.3, seed=1, model="conv2", epochs=2, iterations=None)
    assert changed.pruning.fc_rate == 0.3
    assert changed.runtime.seed == 1
    assert changed.model.model == "conv2"
    assert (changed.training.epochs, changed.training.iterations) == (2, None)
    assert C.differing_fields(base, changed) == ["model", "epochs", "iterations", "fc_rate", "seed"]
    assert base == C.ExperimentConfig()  # the original is untouched


def test_override_with_nothing_is_the_same_config():
    base = C.ExperimentConfig()
    assert C.override(base) == base


def test_override_validates_the_new_values():
    assert one_line_error(C.override, C.ExperimentConfig(), fc_rate=1.0) == "fc_rate=1.0 " + RATE


def test_override_of_an_unknown_field_lists_the_known_ones():
    message = one_line_error(C.override, C.ExperimentConfig(), pruning_rate=0.3)
    assert message == f"unknown config field 'pruning_rate'; known: {', '.join(sorted(ALL_FIELDS))}"


# -- dictionaries and config.json ----------------------------------------------------------------


def json_round_trip(config):
    return C.ExperimentConfig.from_dict(json.loads(json.dumps(config.to_dict())))


def test_to_dict_has_every_section_and_field():
    d = C.ExperimentConfig().to_dict()
    assert list(d) == list(C.SECTIONS)
    for section, kind in SECTIONS:
        assert list(d[section]) == [f.name for f in dataclasses.fields(kind)]


@pytest.mark.parametrize("values", [{}, {**CHANGED, "granularity": "weight", "layer_rates": ()}, {"granularity": "block"}, {"layer_rates": "fc2=0.1,fc1=0.3"}, {"optimizer": SGD_CONFIG, "learning_rate": None, "momentum": None},
                                    {"lr_boundaries": (5, 10), "controls": ("random_reinit", "random_prune")}])
def test_from_dict_of_to_dict_through_json_is_the_same_config(values):
    config = C.override(C.ExperimentConfig(), **values)
    assert json_round_trip(config) == config
    assert json_round_trip(config).fingerprint() == config.fingerprint()


def test_from_dict_fills_missing_sections_and_fields_with_defaults():
    config = C.ExperimentConfig.from_dict({"pruning": {"fc_rate": 0.5}})
    assert config == C.override(C.ExperimentConfig(), fc_rate=0.5)


@pytest.mark.parametrize(
    "d, message",
    [
        ([], "a config must be a dictionary of sections, not list"),
        ({"pruning": {}, "export": {}, "extra": {}},
         "unknown config sections ['export', 'extra']; allowed: model, data, training, pruning, runtime"),
        ({"pruning": {"fc_rate": 0.2, "scope": "global"}}, "unknown config fields ['scope'] in section 'pruning'"),
        ({"model": {"name": "conv2"}}, "unknown config fields ['name'] in section 'model'"),
        ({"training": {"seed": 1}}, "unknown config fields ['seed'] in section 'training'"),
        ({"runtime": [1, 2]}, "config section 'runtime' must be a dictionary, not list"),
        ({"pruning": {"rounds": "12"}}, "rounds='12' must be an integer in 1..10000"),
        ({"runtime": {"seed": 1.5}}, "seed=1.5 must be an integer in 0..4294967295"),
        ({"training": {"jit_compile": "false"}}, "jit_compile='false' must be True or False"),
    ],
)
def test_from_dict_refuses_unknown_names_and_wrong_types(d, message):
    assert one_line_error(C.ExperimentConfig.from_dict, d) == message


@pytest.mark.parametrize("name", ["fc_rate", "conv_rate"])
def test_a_null_per_kind_rate_is_refused(name):
    # None means "half its kind's rate" for output_rate only; fc_rate=None fails later in keep_fractions (TypeError).
    message = one_line_error(C.ExperimentConfig.from_dict, {"pruning": {name: None}})
    assert message.startswith(f"{name}=None ") and "(0, 1)" in message


def version1_dict():
    """A config.json `config` of layout version 1: model.name, pruning.scope, no jit_compile."""
    d = C.override(C.ExperimentConfig(), model="conv4", pruning_scope="global", conv_rate=0.2).to_dict()
    d["model"]["name"] = d["model"].pop("model")
    d["pruning"]["scope"] = d["pruning"].pop("pruning_scope")
    del d["training"]["jit_compile"]
    return json.loads(json.dumps(d))


def test_upgrade_renames_the_version_1_fields():
    saved = version1_dict()
    before = json.dumps(saved, sort_keys=True)
    upgraded = C.upgrade(saved, 1)
    assert upgraded["model"]["model"] == "conv4" and "name" not in upgraded["model"]
    assert upgraded["pruning"]["pruning_scope"] == "global" and "scope" not in upgraded["pruning"]
    assert upgraded["training"]["jit_compile"] is False
    assert json.dumps(saved, sort_keys=True) == before  # the saved dictionary is not changed
    config = C.ExperimentConfig.from_dict(upgraded)
    assert config == C.override(C.ExperimentConfig(), model="conv4", pruning_scope="global", conv_rate=0.2)


def test_upgrade_of_a_version_1_dict_without_a_training_section():
    upgraded = C.upgrade({"model": {"name": "conv2"}}, 1)
    assert upgraded == {"model": {"model": "conv2"}, "training": {"jit_compile": False},
                        "pruning": {"granularity": "weight", "score_batches": "first", "layer_rates": ()}}


def test_upgrade_leaves_a_current_dict_alone():
    d = C.ExperimentConfig().to_dict()
    assert C.upgrade(d, C.CONFIG_VERSION) is d


# -- fingerprints and differences ----------------------------------------------------------------


def test_fingerprint_is_16_hex_digits_and_a_function_of_the_values():
    fp = C.ExperimentConfig().fingerprint()
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert C.ExperimentConfig().fingerprint() == fp
    assert C.override(C.ExperimentConfig(), lr_boundaries=[5, 10]).fingerprint() == \
        C.override(C.ExperimentConfig(), lr_boundaries=(5, 10)).fingerprint()


@pytest.mark.parametrize("name", ALL_FIELDS)
def test_fingerprint_ignores_exactly_the_fields_that_change_no_result(name):
    # score_batches decides results only where the strategy reads data (tests/test_score_batches.py).
    base = C.ExperimentConfig(pruning=C.PruningConfig(pruning_strategy="snip")) if name == "score_batches" else C.ExperimentConfig()
    changed = C.override(base, **{name: CHANGED[name]})
    same = changed.fingerprint() == base.fingerprint()
    assert same == (name in C.NOT_RESULT_FIELDS), name


def test_not_result_fields_are_fields():
    assert set(C.NOT_RESULT_FIELDS) <= set(ALL_FIELDS)
    # A field added after 0.2 enters the fingerprint only away from its default (older runs keep theirs).
    assert set(C.ExperimentConfig().result_fields()) == set(ALL_FIELDS) - set(C.NOT_RESULT_FIELDS) - set(C.ADDED_AT_DEFAULT)
    assert "granularity" in C.override(C.ExperimentConfig(), granularity="unit").result_fields()


def test_a_run_with_another_granularity_differs_in_that_field():
    base = C.ExperimentConfig()
    assert C.differing_fields(base, C.override(base, granularity="unit")) == ["granularity"]
    assert C.differing_fields(C.override(base, granularity="unit"), base) == ["granularity"]


def test_differing_fields_names_result_fields_in_field_order():
    base = C.ExperimentConfig()
    other = C.override(base, seed=3, fc_rate=0.5, rounds=20, data_dir="/elsewhere", dataset="mnist")
    assert C.differing_fields(base, other) == ["dataset", "fc_rate", "seed"]
    assert C.differing_fields(other, base) == ["dataset", "fc_rate", "seed"]
    assert C.differing_fields(base, other, ignore=("seed",)) == ["dataset", "fc_rate"]
    assert C.differing_fields(base, other, ignore=("seed", "dataset", "fc_rate")) == []
    assert C.differing_fields(base, base) == []


def test_differing_fields_compares_optimizer_configs_by_value():
    a = C.override(C.ExperimentConfig(), optimizer={"class_name": "SGD", "config": {"a": 1, "b": 2}},
                   learning_rate=None, momentum=None)
    b = C.override(a, optimizer={"config": {"b": 2, "a": 1}, "class_name": "SGD"})
    assert C.differing_fields(a, b) == []
    assert a.fingerprint() == b.fingerprint()
    c = C.override(a, optimizer={"class_name": "SGD", "config": {"a": 1, "b": 3}})
    assert C.differing_fields(a, c) == ["optimizer"]


@settings(max_examples=30, deadline=None)
@given(st.dictionaries(st.sampled_from(ALL_FIELDS), st.just(None), max_size=6))
def test_differing_fields_are_the_changed_result_fields(chosen):
    names = set(chosen)
    if {"granularity", "pruning_scope"} <= names:  # blocks are ranked within layers: no global scope with them
        names.discard("pruning_scope")
    if {"layer_rates", "pruning_scope"} <= names:  # per-layer rates need a layer's own threshold: refused together
        names.discard("pruning_scope")
    base = C.ExperimentConfig()
    other = C.override(base, **{n: CHANGED[n] for n in names})
    # score_batches decides nothing for base's magnitude pruning, so it never differs from base
    # (between two data-reading strategies it does: tests/test_score_batches.py).
    expected = [n for n in ALL_FIELDS if n in names and n not in C.NOT_RESULT_FIELDS and n != "score_batches"]
    assert C.differing_fields(base, other) == expected
    assert (other.fingerprint() == base.fingerprint()) == (not expected)


# -- presets ---------------------------------------------------------------------------------------


def test_paper_preset_trains_by_iterations():
    config = tf_lottery.from_preset("vgg19", "paper", "mnist")
    assert config.model.model == "vgg19" and config.data.dataset == "mnist"
    t = config.training
    assert (t.iterations, t.epochs, t.lr_boundaries, t.warmup_iterations) == (112_000, None, (56_000, 84_000), 10_000)
    assert config.pruning.pruning_scope == "global"


def test_fast_preset_is_the_paper_one_with_four_epochs_and_no_iteration_schedule():
    paper, fast = tf_lottery.from_preset("vgg19", "paper"), tf_lottery.from_preset("vgg19", "fast")
    t = fast.training
    assert (t.iterations, t.epochs, t.lr_boundaries, t.warmup_iterations) == (None, C.FAST_EPOCHS, (), 0)
    assert C.differing_fields(paper, fast) == ["epochs", "iterations", "lr_boundaries", "warmup_iterations"]
    assert fast.data.dataset == "fashion_mnist"


def test_unknown_preset_is_one_line():
    assert one_line_error(tf_lottery.from_preset, "lenet_300_100", "slow") == "unknown preset 'slow'; allowed: paper, fast"


# -- flags -----------------------------------------------------------------------------------------


def fresh_flags(*argv):
    """A private FlagValues with the config flags, parsed from `argv`."""
    flag_values = flags.FlagValues()
    names = F.define_config_flags(flag_values)
    flag_values(["lottery-find", *argv])
    return names, flag_values


def test_one_flag_per_field_plus_the_renamed_ones():
    flag_values = flags.FlagValues()
    names = F.define_config_flags(flag_values)
    assert names == ALL_FIELDS
    assert set(flag_values) == set(ALL_FIELDS) | set(F.RENAMED)
    assert set(F.RENAMED.values()) <= set(ALL_FIELDS)
    for name in ALL_FIELDS:
        assert flag_values[name].default is None  # unset: keep the preset
        section = C.section_of(name)
        field = {f.name: f for f in dataclasses.fields(C.SECTIONS[section])}[name]
        assert flag_values[name].help.startswith(field.metadata["help"])
        assert f"[{section}; default {field.default!r}]" in flag_values[name].help


@pytest.mark.parametrize("name, flag_type", [
    ("fc_rate", "float"), ("output_rate", "float"), ("learning_rate", "float"), ("seed", "int"), ("epochs", "int"),
    ("jit_compile", "bool"), ("deterministic", "bool"), ("controls", "comma separated list of strings"),
    ("lr_boundaries", "comma separated list of strings"),
    ("optimizer", "string"), ("data_dir", "string"), ("pruning_scope", "string"),
])
def test_flag_types_follow_the_field_types(name, flag_type):
    _, flag_values = fresh_flags()
    assert flag_values[name].flag_type() == flag_type


def test_unset_flags_keep_the_preset():
    names, flag_values = fresh_flags()
    assert F.given_values(names, flag_values) == {}
    assert F.config_from_flags(names, "vgg19", "paper", "mnist", flag_values) == tf_lottery.from_preset("vgg19", "paper", "mnist")


def test_given_flags_override_the_preset():
    names, flag_values = fresh_flags("--fc_rate=0.3", "--seed=5", "--controls=random_reinit,random_prune",
                                     "--nojit_compile", "--deterministic", "--lr_boundaries=100,200")
    config = F.config_from_flags(names, "conv2", "paper", "fashion_mnist", flag_values)
    expected = C.override(tf_lottery.from_preset("conv2", "paper"), fc_rate=0.3, seed=5, controls=("random_reinit", "random_prune"),
                          jit_compile=False, deterministic=True, lr_boundaries=(100, 200))
    assert config == expected


def test_the_model_and_dataset_arguments_win_over_their_flags():
    names, flag_values = fresh_flags("--model=vgg19", "--dataset=cifar10")
    config = F.config_from_flags(names, "conv2", "paper", "mnist", flag_values)
    assert (config.model.model, config.data.dataset) == ("conv2", "mnist")


def test_epochs_without_iterations_clears_the_iteration_budget_and_schedule():
    names, flag_values = fresh_flags("--epochs=3")
    config = F.config_from_flags(names, "vgg19", "paper", "mnist", flag_values)
    t = config.training
    assert (t.iterations, t.epochs, t.lr_boundaries, t.warmup_iterations) == (None, 3, (), 0)
    assert t.learning_rate == 0.1 and t.optimizer == "sgd"  # the rest of the preset stays


def test_epochs_with_a_schedule_keeps_the_schedule_given():
    names, flag_values = fresh_flags("--epochs=3", "--lr_boundaries=10,20", "--warmup_iterations=5")
    t = F.config_from_flags(names, "vgg19", "paper", "mnist", flag_values).training
    assert (t.iterations, t.epochs, t.lr_boundaries, t.warmup_iterations) == (None, 3, (10, 20), 5)


def test_epochs_and_iterations_together_keep_both():
    names, flag_values = fresh_flags("--epochs=3", "--iterations=700")
    t = F.config_from_flags(names, "vgg19", "paper", "mnist", flag_values).training
    assert (t.iterations, t.epochs, t.lr_boundaries) == (700, 3, (56_000, 84_000))


@pytest.mark.parametrize("old, new", list(F.RENAMED.items()))
def test_a_renamed_flag_says_its_new_name(old, new):
    names, flag_values = fresh_flags(f"--{old}=0.3")
    message = one_line_error(F.config_from_flags, names, "lenet_300_100", "paper", "mnist", flag_values)
    assert message == f"--{old} was renamed --{new} (one name per setting, as in the config field)"


def test_lr_boundaries_flag_must_be_integers():
    names, flag_values = fresh_flags("--lr_boundaries=100,x")
    assert one_line_error(F.given_values, names, flag_values) == "lr_boundaries=100,x must be integers (iterations)"


def test_a_bad_flag_value_fails_with_the_field_message():
    names, flag_values = fresh_flags("--pruning_scope=local")
    message = one_line_error(F.config_from_flags, names, "lenet_300_100", "paper", "mnist", flag_values)
    assert message == "unknown pruning_scope 'local'; allowed: layerwise, global, global_all"
