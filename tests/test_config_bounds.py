"""Every number of the config has a range that a real run can use, checked when the config is made, with
the bound in the one-line error; NaN and infinity are refused for every float (issue 19)."""

import dataclasses
import math
import re
import typing

import pytest

from tf_lottery import config as C


def numeric_fields():
    """(section class, field name, int or float) for every numeric field of every config section."""
    found = []
    for section in C.SECTIONS.values():
        hints = typing.get_type_hints(section)
        for field in dataclasses.fields(section):
            if typing.get_origin(hints[field.name]) is tuple:  # lr_boundaries: its own test below
                continue
            kinds = set(typing.get_args(hints[field.name])) | {hints[field.name]}
            if int in kinds and bool not in kinds:
                found.append((section, field.name, int))
            elif float in kinds:
                found.append((section, field.name, float))
    return found


FIELDS = numeric_fields()
IDS = [f"{section.__name__}.{name}" for section, name, _ in FIELDS]


def make(section, name, value):
    return section(**{name: value})


def test_every_numeric_field_is_covered():
    names = {name for _, name, _ in FIELDS}
    assert {"rounds", "iterations", "epochs", "eval_every", "checkpoint_every", "batch_size", "warmup_iterations",
            "rewind_step", "seed", "validation_size", "train_subset", "learning_rate", "momentum", "fc_rate",
            "conv_rate", "output_rate", "dropout_rate", "worker_timeout"} <= names


@pytest.mark.parametrize("section, name, kind", [f for f in FIELDS if f[2] is int], ids=[i for i, f in zip(IDS, FIELDS) if f[2] is int])
def test_an_integer_field_names_its_range_and_takes_its_bound(section, name, kind):
    with pytest.raises(ValueError) as info:
        make(section, name, 10**30)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{name}={10**30} must be an integer in "), message
    low, high = map(int, re.search(r"in (-?\d+)\.\.(\d+)", message).groups())
    assert high < 10**30
    make(section, name, high)  # the bound itself is a value a run may use
    make(section, name, low)
    for bad in (high + 1, low - 1):
        with pytest.raises(ValueError, match=rf"^{name}={bad} must be an integer in {low}\.\.{high}"):
            make(section, name, bad)


@pytest.mark.parametrize("section, name, kind", [f for f in FIELDS if f[2] is float], ids=[i for i, f in zip(IDS, FIELDS) if f[2] is float])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e30], ids=["nan", "inf", "-inf", "huge"])
def test_a_float_field_refuses_nan_infinity_and_huge_values(section, name, kind, bad):
    with pytest.raises(ValueError) as info:
        make(section, name, bad)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{name}={bad!r} "), message


def test_boundaries_of_the_learning_rate_schedule_are_bounded_too():
    with pytest.raises(ValueError, match=r"^lr_boundaries=100000001 must be an integer in 1\.\.100000000"):
        C.TrainingConfig(lr_boundaries=(10, 100_000_001))
    with pytest.raises(ValueError, match=r"^lr_boundaries=nan must be an integer"):
        C.TrainingConfig(lr_boundaries=(math.nan,))
