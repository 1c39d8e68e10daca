"""How the primary analysis reads: its contrasts, trends, exchange rates and the power at declared effects,
as (headers, rows) that synthaug.analysis.significance_report puts first in the printed table and in report.md."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from synthaug.analysis.primary import ALPHA, POWER, Primary
from synthaug.core.report import format_p
from synthaug.stats.inference import DECLARED_EFFECTS

Table = tuple[list[str], list[list[str]]]
NO_INTERVAL = "[no CI]"     # fewer than 2 values, or no spread
NOT_DECLARED = "no primary analysis was declared; every comparison is secondary"


@dataclass(frozen=True)
class Units:
    """How the metric is shown: accuracies as % and differences as percentage points (the CSVs keep
    the fraction MLflow logs); a header names the unit with `value_header` and `diff_header`."""

    scale: float
    value: str
    diff: str

    @classmethod
    def of(cls, metric: str) -> "Units":
        return cls(100.0, "%", " pp") if "acc" in metric else cls(1.0, "", "")

    @property
    def value_header(self) -> str:
        return f" ({self.value})" if self.value else ""

    @property
    def diff_header(self) -> str:
        return f" ({self.diff.strip()})" if self.diff else ""


def interval(mean: float, lo: float, hi: float, units: Units, suffix: str, signed: bool = False,
             bounds: bool = True, digits: int = 2) -> str:
    """'71.20% [70.10, 72.30]', or with NO_INTERVAL where the interval is not estimable; `bounds` False:
    the value alone."""
    if not np.isfinite(mean):
        return "-"
    text = ("{:+.%df}" % digits if signed else "{:.%df}" % digits).format(mean * units.scale) + suffix
    return text + (" " + bounds_text(lo, hi, units, signed, digits) if bounds else "")


def bounds_text(lo: float, hi: float, units: Units, signed: bool = False, digits: int = 2) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return NO_INTERVAL
    number = "{:+.%df}" % digits if signed else "{:.%df}" % digits
    return "[" + ", ".join(number.format(x * units.scale) for x in (lo, hi)) + "]"


def contrast_rows(primary: Primary, units: Units, confidence: int) -> Table:
    """A row a declared contrast: the seed-paired difference (its interval covers seeds) and the two-way one
    (its interval covers seeds and test images), each with its p after Holm over the primary family."""
    headers = ["contrast", "seeds", f"diff{units.diff_header} {confidence}% CI, covers seeds", "p (paired t, Holm)",
               f"diff{units.diff_header} {confidence}% CI, covers seeds + test images", "test images",
               "p (two-way t, Holm)", f"verdict at {ALPHA:g}"]
    rows = [[f"{r.configuration} vs {r.baseline}", str(r.n_pairs),
             interval(r.mean_diff, r.ci_low, r.ci_high, units, units.diff, signed=True), format_p(r.t_holm),
             interval(r.two_way_mean_diff, r.two_way_ci_low, r.two_way_ci_high, units, units.diff, signed=True),
             str(r.n_images or "-"), format_p(r.two_way_holm), r.verdict] for r in primary.contrasts.itertuples()]
    return headers, rows


def trend_rows(primary: Primary, units: Units, confidence: int) -> Table:
    """A row a trend: the slope a unit of the trend column over seeds, and over seeds and test images, each with
    its p after Holm over the primary family."""
    headers = ["trend over", "configurations", "values", "seeds",
               f"slope{units.diff_header} a unit, {confidence}% CI, covers seeds", "p (seed trend, Holm)",
               f"slope{units.diff_header} a unit, {confidence}% CI, covers seeds + test images", "test images",
               "p (two-way trend, Holm)", f"verdict at {ALPHA:g}"]
    rows = [[r.trend, r.configurations, r.x, str(r.n_seeds),
             interval(r.slope, r.ci_low, r.ci_high, units, units.diff, signed=True, digits=4), format_p(r.t_holm),
             interval(r.two_way_slope, r.two_way_ci_low, r.two_way_ci_high, units, units.diff, signed=True, digits=4),
             str(r.n_images or "-"), format_p(r.two_way_holm), r.verdict]
            for r in primary.trends.itertuples()]
    return headers, rows


def exchange_lines(primary: Primary, confidence: int) -> list[str]:
    """'one synthetic image is worth X real images [lo, hi]' a declared (synthetic, real) pair."""
    lines = []
    for r in primary.exchange.itertuples():
        if not np.isfinite(r.rate):
            lines.append(f"{r.synthetic} against {r.real}: no rate ({r.note or 'no paired seeds'})")
            continue
        span = f"[{r.ci_low:.2f}, {r.ci_high:.2f}]" if r.bounded else f"no bounded {confidence}% interval"
        if np.isfinite(r.gap_low):
            span += f" (every rate outside {r.gap_low:.2f} .. {r.gap_high:.2f})"
        lines.append(f"one synthetic image ({r.synthetic}) is worth {r.rate:.2f} real images ({r.real}) {span} "
                     f"(Fieller {confidence}%, covers seeds; {r.n_seeds} seeds, gains over {r.baseline}: "
                     f"{r.synthetic_diff * 100:+.2f} and {r.real_diff * 100:+.2f} pp)" + (f"; {r.note}" if r.note
                                                                                          else ""))
    return lines


def power_rows(power: pd.DataFrame) -> Table:
    """A row a declared effect: the power of the seeds there are and the seeds needed for POWER."""
    if power.empty:
        return [], []
    first = power.iloc[0]
    headers = ["effect (pp)", f"power with {int(first['n_seeds'])} seeds at alpha {first['alpha']:.3g}",
               f"seeds for {POWER:.0%} power"]
    rows = [[f"{r.effect * 100:g}", f"{r.power:.2f}", _seeds(r.seeds_needed)] for r in power.itertuples()]
    return headers, rows


def power_line(power: pd.DataFrame) -> str:
    """Where the power table's figures come from."""
    if power.empty:
        return "not estimable: fewer than 3 paired differences in all, or none with spread"
    first = power.iloc[0]
    return (f"from the sweep's own seed-paired sd, {first['paired_sd'] * 100:.3f} pp, at effects "
            f"{', '.join(f'{e * 100:g}' for e in DECLARED_EFFECTS)} pp and Holm's smallest level over a family of "
            f"{int(first['family_size'])} ({ALPHA:g}/{int(first['family_size'])}); not the observed effects")


def _seeds(n: float) -> str:
    return "more than 10,000" if not np.isfinite(n) else f"{int(n)}"
