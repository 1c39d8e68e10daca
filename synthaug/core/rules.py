"""Validation of the config dataclasses: a table of rules, checked in order, the first broken one raised.

Every config dataclass (TrainConfig, DDPMConfig, SamplerConfig, GeneratorSpec, TrialConfig) validates the
same way: `check(self, prefix, [Rule(field, ok, allowed), ...])`, with the prefix passed in by whoever
nests it (a TrialConfig's train is "train", a generator's labeller "generator.labeller"), so the one line
a CLI prints is

    <prefix>.<field>: <what is allowed>, got <value>

A leaf module: it imports nothing of synthaug, so every config module can use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple


class ConfigError(ValueError):
    """A bad configuration value; the message is one line fit for a CLI."""


class Rule(NamedTuple):
    field: str                          # the dataclass field it checks
    ok: Callable[[Any], bool]           # given the field's value: allowed?
    allowed: str                        # what is allowed, in words ("an integer >= 1")


def check(obj: Any, prefix: str, rules: Iterable[Rule]) -> None:
    """Raise ConfigError("<prefix>.<field>: <allowed>, got <value!r>") for the first rule obj breaks
    (a prefix "" names the field alone)."""
    for rule in rules:
        value = getattr(obj, rule.field)
        if not rule.ok(value):
            raise ConfigError(f"{prefix}.{rule.field}: {rule.allowed}, got {value!r}".lstrip("."))


def is_int(v: Any) -> bool:
    """An int, not a bool."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """An int or a float, not a bool, not NaN."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)
