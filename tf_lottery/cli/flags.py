"""absl flags generated from the config dataclasses: each field is the flag of the same name.

A flag the user gives overrides the chosen preset; one left unset keeps it. Flags renamed in
version 0.2 are still defined, only to say their new name in one line.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from absl import flags

from tf_lottery import branches, strategies
from tf_lottery import config as config_lib

# Fields whose choices live in a registry rather than in config.py: their help lists them.
REGISTRY_CHOICES = {"pruning_strategy": strategies.names, "controls": branches.controls}

RENAMED = {
    "pruning_rate": "fc_rate",
    "conv_pruning_rate": "conv_rate",
    "output_pruning_rate": "output_rate",
}


def _flag_type(hint) -> type:
    """bool, int, float, tuple (a list flag) or str, from a field's type hint."""
    if typing.get_origin(hint) is tuple:
        return tuple
    if typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return str if dict in args else args[0]
    return hint


def define_config_flags(flag_values=flags.FLAGS) -> list[str]:
    """Define one flag per config field (default None: 'keep the preset'); return their names."""
    names = []
    for section, kind in config_lib.SECTIONS.items():
        hints = typing.get_type_hints(kind)
        for field in dataclasses.fields(kind):
            help_text = field.metadata.get("help", "")
            if field.name in REGISTRY_CHOICES:
                help_text += f" Allowed: {', '.join(REGISTRY_CHOICES[field.name]())}."
            help_text = f"{help_text} [{section}; default {field.default!r}]"
            flag_type = _flag_type(hints[field.name])
            if flag_type is bool:
                flags.DEFINE_bool(field.name, None, help_text, flag_values=flag_values)
            elif flag_type is int:
                flags.DEFINE_integer(field.name, None, help_text, flag_values=flag_values)
            elif flag_type is float:
                flags.DEFINE_float(field.name, None, help_text, flag_values=flag_values)
            elif flag_type is tuple:
                flags.DEFINE_list(field.name, None, help_text, flag_values=flag_values)
            else:
                flags.DEFINE_string(field.name, None, help_text, flag_values=flag_values)
            names.append(field.name)
    for old, new in RENAMED.items():
        flags.DEFINE_string(old, None, f"Renamed --{new}.", flag_values=flag_values)
    return names


def given_values(names: list[str], flag_values=flags.FLAGS) -> dict[str, Any]:
    """The config fields the user gave on the command line, parsed."""
    for old, new in RENAMED.items():
        if flag_values[old].present:
            raise ValueError(f"--{old} was renamed --{new} (one name per setting, as in the config field)")
    out = {}
    for name in names:
        if flag_values[name].present:
            value = flag_values[name].value
            if isinstance(value, list):
                value = tuple(v.strip() for v in value if v.strip())
            out[name] = value
    if "lr_boundaries" in out:
        try:
            out["lr_boundaries"] = tuple(int(v) for v in out["lr_boundaries"])
        except ValueError:
            raise ValueError(f"lr_boundaries={','.join(out['lr_boundaries'])} must be integers (iterations)") from None
    return out


def config_from_flags(names: list[str], model: str, preset: str, dataset: str, flag_values=flags.FLAGS):
    """The preset of `model`, overridden by every config flag given.

    Giving `epochs` without `iterations` replaces the preset's iteration budget (and its
    iteration-based schedule: lr_boundaries, warmup_iterations, unless given too).
    """
    import tf_lottery_models as zoo  # TensorFlow: only the commands that build a config from flags need it

    config = zoo.from_preset(model, preset, dataset)
    values = given_values(names, flag_values)
    values.pop("model", None)
    values.pop("dataset", None)
    if "epochs" in values and "iterations" not in values:
        values.setdefault("iterations", None)
        values.setdefault("lr_boundaries", ())
        values.setdefault("warmup_iterations", 0)
    return config_lib.override(config, **values)
