"""A sweep's declared primary analysis (Experiment.primary, trend, trend_within, exchange), checked against its
plan and written as it will be read: each configuration text with the data's class names, as the parent run's
tag synthaug.primary, so the analysis (which leads with it) names configurations exactly as it labels them.

A text is key=value pairs joined by ',' in the form --baseline takes ("arm=synthetic,augment_classes=truck,ship":
an item without '=' continues the previous value, a list; configurations.parse_baseline reads it). A text may leave a configuration column out; it then
stands for every value of that column.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from synthaug.config import ConfigError
from synthaug.data.sources import Dataset
from synthaug.sweep.sweep_inputs import resolve_value


def logged(value: Any) -> str:
    """A cell's value as its trial's MLflow param reads: a list as 'a,b' (empty: ''), 2.0 as '2'."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def declaration(experiment, grid: Mapping[str, list], cells: Sequence[Mapping[str, Any]], dataset: Dataset,
                aliases: Mapping[str, str], notes: list[str]) -> dict:
    """The experiment's declaration as the tag's JSON object ({} when it declares nothing), class names resolved
    to the data's; ConfigError in one line when a text names a column the sweep does not vary; a line added to
    `notes` when it names a configuration its cells (after --grid) do not have."""
    # the analysis's own reading of the same texts
    from synthaug.analysis.configurations import parse_baseline
    from synthaug.analysis.results import InputError

    where = f"Experiment {experiment.name}"
    columns = list(grid)
    noted: set[str] = set()         # each text missing from the cells is noted once

    def resolved(text: str, field: str, empty_ok: bool = False) -> str:
        if text == "" and empty_ok:
            return ""
        try:
            spec = parse_baseline(text, f"{where} {field}")
        except InputError as err:
            raise ConfigError(str(err)) from None
        unknown = [k for k in spec if k not in columns]
        if unknown:
            raise ConfigError(f"{where} {field}: {text!r} names {unknown[0]!r}, not one of the sweep's configuration "
                              f"columns ({', '.join(columns) or 'none'})")
        spec = {k: _resolve(k, v, dataset, aliases) for k, v in spec.items()}
        if not any(all(_same(cell[k], v) for k, v in spec.items()) for cell in cells) and text not in noted:
            noted.add(text)
            # a cut-down run (--grid) still runs: the text stays declared, and the analysis says it was not tested
            values = "; ".join(f"{k} in {', '.join(logged(v) or 'none' for v in vs)}" for k, vs in grid.items())
            notes.append(f"note: {where} {field}: no configuration of this sweep has {text!r} (a --grid removed it?); "
                         f"its {values}; the analysis will report it as not tested")
        return ",".join(f"{k}={v}" for k, v in spec.items())

    if experiment.trend and experiment.trend not in columns:
        raise ConfigError(f"{where} trend: {experiment.trend!r} is not one of the sweep's configuration columns "
                          f"({', '.join(columns) or 'none'})")
    declared = {
        "primary": [[resolved(t, "primary"), resolved(b, "primary", empty_ok=True)] for t, b in experiment.primary],
        "trend": experiment.trend,
        "trend_within": resolved(experiment.trend_within, "trend_within", empty_ok=True),
        "exchange": [[resolved(s, "exchange"), resolved(r, "exchange")] for s, r in experiment.exchange]}
    return declared if any(declared.values()) else {}


def tag_value(declared: Mapping[str, Any]) -> str:
    """The parent run's tag tracking.PRIMARY (results.Declaration.from_tag reads it back)."""
    return json.dumps(dict(declared))


def describe(declared: Mapping[str, Any]) -> list[str]:
    """The dry run's lines for the declared primary analysis."""
    from synthaug.core.tracking import PRIMARY

    if not declared:
        return ["primary analysis: none declared (every comparison with the baseline is one of a family)"]
    lines = [f"primary analysis (declared, tag {PRIMARY}):"]
    lines += [f"  {t} vs {b or 'the baseline'}" for t, b in declared["primary"]]
    if declared["trend"]:
        lines.append(f"  trend in {declared['trend']}" + (f" within {declared['trend_within']}"
                                                           if declared["trend_within"] else ""))
    lines += [f"  exchange rate: {s} against {r}, each against the baseline" for s, r in declared["exchange"]]
    return lines


def _same(value: Any, text: str) -> bool:
    """A cell's value is the one a text names: as its MLflow param reads ('' is none), or the same number."""
    if (logged(value) or "none") == text:
        return True
    try:
        return not isinstance(value, (list, tuple, str)) and float(value) == float(text)
    except ValueError:
        return False


def _resolve(key: str, text: str, dataset: Dataset, aliases: Mapping[str, str]) -> str:
    """augment_classes' names as the data's own (as synthaug.sweep.sweep_inputs.resolve_value); other values as given."""
    if key != "augment_classes" or text in ("", "none"):
        return "none" if key == "augment_classes" else text
    return ",".join(resolve_value(key, [name.strip() for name in text.replace("+", ",").split(",")], dataset, aliases))
