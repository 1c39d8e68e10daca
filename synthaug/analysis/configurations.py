"""A sweep's configurations: their labels, the baseline, and texts in --baseline form that name some of them.

    runs = labelled(trials.frame, trials.config_columns)       # + a `configuration` column
    parse_baseline("augment_classes=truck,ship,augment_count=500")   # {key: value}
    matching(runs, {"replace_pct": "2"}, "--baseline")          # the labels of the runs that text names

A configuration is one combination of the sweep's varying params (results.Trials.config_columns).
The baseline is the configuration that uses no synthetic images (replace_pct == 0 and no
augmentation) unless one is named. Bad input raises results.InputError, one line naming the flag.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from synthaug.analysis.results import InputError

LABEL = "configuration"


def parse_baseline(text: str, flag: str = "--baseline") -> dict[str, str]:
    """'replace_pct=0' or 'augment_classes=truck,ship,augment_count=500' -> {key: value}.

    A comma-separated item without '=' continues the previous value (list-valued params).
    """
    spec: dict[str, str] = {}
    key = None
    for item in text.split(","):
        name, equals, value = item.partition("=")
        if equals and name.strip():
            key = name.strip()
            if key in spec:
                raise InputError(f"{flag}: {key!r} given twice in {text!r}")
            spec[key] = value.strip()
        elif key is not None and not equals:
            spec[key] += "," + item.strip()
        else:
            raise InputError(f"{flag}: expected key=value[,key=value], got {text!r}")
    return spec


def labelled(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The frame with a `configuration` column: 'replace_pct=2, augment_count=500'."""
    labels = [config_label(dict(zip(columns, row))) for row in frame[list(columns)].itertuples(index=False)]
    return frame.assign(**{LABEL: labels})


def config_label(values: Mapping[str, object]) -> str:
    """'key=value' pairs joined by ', ' (floats without a trailing .0, lists as a+b); 'all runs' when empty."""
    return ", ".join(f"{k}={format_value(v)}" for k, v in values.items()) or "all runs"


def format_value(value: object) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value.replace(",", "+") or "none"       # list params are logged as "a,b"
    return str(value)


def configurations(done: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """One row a configuration: its label and config column values, in the columns' order."""
    configs = done[[LABEL, *columns]].drop_duplicates(LABEL)
    return configs.sort_values(list(columns) or LABEL, ignore_index=True)


def choose_baseline(configs: pd.DataFrame, done: pd.DataFrame, spec: Mapping[str, str] | None) -> str:
    """The baseline's label: the one configuration matching `spec`, else the one without synthetic data."""
    if spec:
        return _named_baseline(configs, spec)
    if len(configs) == 1:
        return configs[LABEL].iloc[0]
    plain = sorted(set(done.loc[uses_no_synthetic(done), LABEL]))
    allowed = ", ".join(c for c in configs.columns if c != LABEL) or "none (one configuration)"
    if len(plain) == 1:
        return plain[0]
    if not plain:
        raise InputError("--baseline: no configuration without synthetic images (replace_pct=0, augment_count=0); "
                         f"name one as key=value with key one of: {allowed}")
    raise InputError(f"--baseline: {len(plain)} configurations use no synthetic images ({'; '.join(plain)}); "
                     f"name one as key=value with key one of: {allowed}")


def uses_no_synthetic(frame: pd.DataFrame) -> pd.Series:
    """Runs that trained on real images only (as TrialConfig.uses_synthetic, inverted)."""
    if "replace_pct" not in frame and "augment_count" not in frame:
        return pd.Series(False, index=frame.index)
    replace = frame["replace_pct"].fillna(0) == 0 if "replace_pct" in frame else True
    augment = frame["augment_count"].fillna(0) == 0 if "augment_count" in frame else True
    if "augment_classes" in frame:
        augment = augment | frame["augment_classes"].fillna("").astype(str).eq("")
    return pd.Series(replace & augment, index=frame.index)


def _named_baseline(configs: pd.DataFrame, spec: Mapping[str, str]) -> str:
    columns = [c for c in configs.columns if c != LABEL]
    for key in spec:
        if key not in columns:
            raise InputError(f"--baseline: unknown column {key!r}; one of: {', '.join(columns) or 'none'}")
    found = matching(configs, spec, "--baseline")
    if len(found) == 1:
        return found[0]
    given = ",".join(f"{k}={v}" for k, v in spec.items())
    if not found:
        choices = "; ".join(f"{c} in {', '.join(format_value(v) for v in configs[c].unique())}" for c in columns)
        raise InputError(f"--baseline: no finished configuration has {given}; {choices}")
    raise InputError(f"--baseline: {given} matches {len(found)} configurations; add key=value for one of: "
                     f"{', '.join(c for c in columns if c not in spec)}")


def matching(frame: pd.DataFrame, spec: Mapping[str, str], flag: str) -> list[str]:
    """The labels (in the frame's order, each once) of the rows whose columns equal every value of `spec`."""
    mask = pd.Series(True, index=frame.index)
    for key, text in spec.items():
        if key not in frame:
            raise InputError(f"{flag}: unknown column {key!r}; one of: "
                             f"{', '.join(c for c in frame.columns if c != LABEL) or 'none'}")
        mask &= _matches(frame[key], key, text, flag)
    return list(dict.fromkeys(frame.loc[mask, LABEL]))


def _matches(column: pd.Series, key: str, text: str, flag: str) -> pd.Series:
    """column == text, with text read as the column's type."""
    if pd.api.types.is_bool_dtype(column):
        if text not in ("True", "False"):
            raise InputError(f"{flag}: {key} takes True or False, got {text!r}")
        return column == (text == "True")
    if pd.api.types.is_numeric_dtype(column):
        try:
            return pd.Series(np.isclose(column.astype(float), float(text), rtol=1e-12, atol=0), index=column.index)
        except ValueError:
            raise InputError(f"{flag}: {key} takes a number, got {text!r}") from None
    return column.fillna("").astype(str) == ("" if text == "none" else text)


def seed_values(done: pd.DataFrame, column: str) -> dict[str, pd.Series]:
    """configuration -> its finished values of `column`, indexed by seed (missing values dropped)."""
    return {label: group.set_index("seed")[column].dropna().astype(float).sort_index()
            for label, group in done.groupby(LABEL, sort=False)}
