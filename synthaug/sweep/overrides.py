"""--set and --grid: any trial, preset or generator setting from the command line, by its dotted name.

    --set train.epochs=1                        a TrialConfig field, for every trial
    --set preset.gpus_per_trial=0.25            a field of the preset
    --set generators.ddpm-cond.train_on=trial   a field of one of the preset's generators
    --grid replace_pct=0,2,4                    replace (or add) a grid axis: a TrialConfig field
    --grid arm=none,conditional                 keep some of the experiment's arms
    --grid recipe=study,strong

A value keeps its field's type (an int field refuses 1.5; a bool is true or false); a tuple's
items are joined with '+' (augment_classes=truck+ship; the empty tuple is 'none' or nothing), and
int-or-None fields take 'none'. A key nobody knows is refused in one line that names the nearest
known key, on the command line and in a sweep script's own Experiment alike (nanoGPT's "Unknown
config key"): a typo never runs the wrong sweep.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Sequence

from synthaug.config import ConfigError, GeneratorSpec, Preset, TrialConfig, leaf_types

# not settable: they say what the preset is; or, the planned paired sd, set by --paired-sd with its source
FIXED_PRESET_FIELDS = ("name", "generators", "alternatives", "paired_sd", "paired_sd_source")


TRIAL_KEYS = leaf_types(TrialConfig)


def unknown_key(key: str, known: Sequence[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else f"; known keys: {', '.join(sorted(known)[:12])}, ..."
    return ConfigError(f"{where}: unknown key {key!r}{hint}")


def check_trial_keys(keys, where: str) -> None:
    """Refuse any key that is not a TrialConfig field (dotted)."""
    for key in keys:
        if key not in TRIAL_KEYS:
            raise unknown_key(key, list(TRIAL_KEYS), where)


def grid_value(value: Any, empty: str = "none") -> str:
    """A value as every output writes it (the console, the dry run, the summary, arm names) and a --grid flag
    takes it (parse_value's inverse): a tuple as truck+ship, the empty one as none, anything else as str()."""
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value)) or empty
    return str(value)


def parse_value(key: str, text: str, hint: Any, flag: str) -> Any:
    """text as the type `hint` says, or ConfigError naming the flag, the key and what is allowed."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if text.lower() == "none" and type(None) in args:
            return None
        return parse_value(key, text, next(a for a in args if a is not type(None)), flag)
    if origin is tuple:
        item = args[0] if args else str
        return tuple(parse_value(key, part, item, flag) for part in text.split("+")) if text not in ("", "none") else ()
    try:
        if hint is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
    except ValueError:
        kind = {bool: "true or false", int: "an integer", float: "a number"}[hint]
        raise ConfigError(f"{flag} {key}: {kind}, got {text!r}") from None
    return text


def split_assignment(flag: str, text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{flag}: key=value, got {text!r}")
    return key.strip(), value.strip()


def apply_sets(experiment, chosen: Preset, assignments: Sequence[str]):
    """(experiment, preset) with every --set applied; each key and value checked."""
    fixed, grid = dict(experiment.fixed), dict(experiment.grid)
    paper_fixed, paper_grid = dict(experiment.paper_fixed), dict(experiment.paper_grid)
    for text in assignments:
        key, raw = split_assignment("--set", text)
        if key.startswith("preset."):
            chosen = _set_preset(chosen, key, raw)
        elif key.startswith("generators."):
            chosen = _set_generator(chosen, key, raw)
        else:
            if key not in TRIAL_KEYS:
                raise unknown_key(key, [*TRIAL_KEYS, "preset.<field>", "generators.<name>.<field>"], "--set")
            setters = [arm for arm, values in experiment.arms.items() if key in values]
            if setters:
                raise ConfigError(f"--set {key}: the arms {', '.join(setters)} set it; choose arms with --grid arm=...")
            value = parse_value(key, raw, TRIAL_KEYS[key], "--set")
            if key in grid or key in paper_grid:
                grid[key] = [value]             # one value of the axis
            else:
                fixed[key] = value
            paper_fixed.pop(key, None)          # the command line wins over the paper preset's settings
            paper_grid.pop(key, None)
    return dataclasses.replace(experiment, fixed=fixed, grid=grid, paper_fixed=paper_fixed,
                               paper_grid=paper_grid), chosen


def apply_grids(experiment, assignments: Sequence[str]):
    """The experiment with each --grid key=v1,v2 axis replaced or added (arm=... keeps those arms)."""
    grid, arms, paper_grid = dict(experiment.grid), dict(experiment.arms), dict(experiment.paper_grid)
    for text in assignments:
        key, raw = split_assignment("--grid", text)
        values = raw.split(",")
        if key == "arm":
            unknown = [v for v in values if v not in arms]
            if not arms or unknown:
                raise ConfigError(f"--grid arm: names from {', '.join(arms) or '(this experiment has no arms)'}; "
                                  f"got {raw!r}")
            arms = {v: arms[v] for v in values}
            continue
        if key not in TRIAL_KEYS or key == "seed":
            raise unknown_key(key, [k for k in TRIAL_KEYS if k != "seed"], "--grid (seeds: --seeds)")
        parsed = [parse_value(key, v, TRIAL_KEYS[key], "--grid") for v in values]
        if len(set(map(repr, parsed))) != len(parsed):
            raise ConfigError(f"--grid {key}: distinct values, got {raw!r}")
        grid[key] = parsed
        paper_grid.pop(key, None)               # the command line wins over the paper preset's axes
    return dataclasses.replace(experiment, grid=grid, arms=arms, paper_grid=paper_grid)


def check_experiment(experiment) -> None:
    """Every key a sweep script's Experiment names is a TrialConfig field."""
    where = f"Experiment {experiment.name}"
    check_trial_keys([k for k in experiment.grid if k != "arm"], f"{where} grid")
    check_trial_keys(experiment.fixed, f"{where} fixed")
    check_trial_keys(experiment.paper_fixed, f"{where} paper_fixed")
    check_trial_keys(experiment.paper_grid, f"{where} paper_grid")
    for arm, values in experiment.arms.items():
        check_trial_keys(values, f"{where} arm {arm}")


def _set_preset(chosen: Preset, key: str, raw: str) -> Preset:
    path = key.removeprefix("preset.")
    known = {k: v for k, v in leaf_types(Preset).items() if k.split(".")[0] not in FIXED_PRESET_FIELDS}
    if path not in known:
        raise unknown_key(key, [f"preset.{k}" for k in known], "--set")
    return _replace_path(chosen, path.split("."), parse_value(key, raw, known[path], "--set"))


def _set_generator(chosen: Preset, key: str, raw: str) -> Preset:
    names = {g.name: g for g in chosen.generators}
    name = next((n for n in sorted(names, key=len, reverse=True) if key.startswith(f"generators.{n}.")), None)
    if name is None:
        raise ConfigError(f"--set {key}: generators.<name>.<field> with <name> one of {', '.join(names)}")
    path = key.removeprefix(f"generators.{name}.")
    known = {k: v for k, v in leaf_types(GeneratorSpec).items() if k != "name"}
    if path not in known:
        raise unknown_key(key, [f"generators.{name}.{k}" for k in known], "--set")
    spec = _replace_path(names[name], path.split("."), parse_value(key, raw, known[path], "--set"))
    return dataclasses.replace(chosen, generators=tuple(spec if g.name == name else g for g in chosen.generators))


def _replace_path(obj, path: Sequence[str], value: Any):
    head, *rest = path
    return dataclasses.replace(obj, **{head: _replace_path(getattr(obj, head), rest, value) if rest else value})
