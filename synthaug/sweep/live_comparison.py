"""A sweep's comparison with its baseline while Tune runs it: as a seed completes for a configuration and for the
baseline, one console line with the paired difference over the seeds both have finished so far (mean in percentage
points; the 95% t interval once two seeds are paired: synthaug.stats.compare.paired_comparison) and the sweep's ETA
(synthaug.sweep.console.estimate_eta, the status line's), and the same figures on the sweep's parent MLflow run:

    live replace_pct=20 vs replace_pct=0, 3 paired seeds so far: +2.22 pp (95% t interval -0.17 to +4.61); \
6/6 trials finished, none left

Metrics (step: the paired seeds): live.diff_pp.<configuration>, live.ci_low_pp.<configuration> and
live.ci_high_pp.<configuration> (from two paired seeds); live.eta_s and live.trials_finished (step: the trials
finished). The baseline is the analysis's default one: the configuration without synthetic images. Running figures
only: the analysis script's report (its tests, the declared primary family, Holm) is the authority.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ray import tune

from synthaug.config import trial_values
from synthaug.sweep.console import estimate_eta, values_label
from synthaug.sweep.overrides import grid_value
from synthaug.sweep.sweep_plan import SweepPlan
from synthaug.sweep.sweep_runs import configuration_key

PREFIX = "live."


def baseline_cell(plan: SweepPlan) -> dict | None:
    """The sweep's baseline, as the analysis chooses it without --baseline: its one configuration that uses no
    synthetic images (replace_pct 0 and nothing augmented; configurations.uses_no_synthetic); None when there
    is not exactly one, or nothing to compare it with."""
    plain = [cell for cell, cfg in zip(plan.cells, plan.configs[::len(plan.seeds)])
             if cfg.replace_pct == 0 and cfg.augmented_total == 0]
    return dict(plain[0]) if len(plain) == 1 and len(plan.cells) > 1 else None


@dataclass(frozen=True)
class RunningDifference:
    """A configuration minus the baseline over the seeds both have finished (percentage points)."""

    configuration: str          # as the console writes it: "replace_pct=20"
    key: str                    # as a metric name's last part: "replace_pct_20"
    seeds: int                  # paired seeds so far
    diff_pp: float
    ci_low_pp: float            # nan before two paired seeds, or when the differences do not vary
    ci_high_pp: float

    def text(self, baseline: str) -> str:
        if self.seeds < 2:
            interval = "an interval from 2 paired seeds"
        elif math.isnan(self.ci_low_pp):
            interval = "no interval: the differences do not vary"
        else:
            interval = f"95% t interval {self.ci_low_pp:+.2f} to {self.ci_high_pp:+.2f}"
        paired = f"{self.seeds} paired seed{'s' if self.seeds > 1 else ''}"
        return f"live {self.configuration} vs {baseline}, {paired} so far: {self.diff_pp:+.2f} pp ({interval})"

    def metrics(self) -> dict[str, float]:
        figures = {"diff_pp": self.diff_pp, "ci_low_pp": self.ci_low_pp, "ci_high_pp": self.ci_high_pp}
        return {f"{PREFIX}{name}.{self.key}": value for name, value in figures.items() if math.isfinite(value)}


def running_difference(configuration: str, key: str, treatment: Mapping[int, float],
                       baseline: Mapping[int, float]) -> RunningDifference:
    """treatment - baseline (test accuracies a seed, fractions) over their common seeds, in percentage points."""
    from synthaug.stats.compare import paired_comparison

    seeds = sorted(set(treatment) & set(baseline))
    result = paired_comparison([treatment[s] for s in seeds], [baseline[s] for s in seeds])
    return RunningDifference(configuration, key, len(seeds), 100 * result.mean_diff, 100 * result.ci_low,
                             100 * result.ci_high)


def completed_pairs(accuracies: Mapping[str, Mapping[int, float]], configuration: str, seed: int,
                    baseline: str) -> list[str]:
    """The configurations whose pair with the baseline at `seed` the trial (configuration, seed) just completed
    (`accuracies` holds it already): itself once the baseline has that seed; every other configuration with that
    seed when it is the baseline."""
    if configuration != baseline:
        return [configuration] if seed in accuracies.get(baseline, {}) else []
    return [c for c, by_seed in accuracies.items() if c != baseline and seed in by_seed]


class LiveComparison(tune.Callback):
    """The running difference of each configuration against the baseline as its seeds complete (a line, and
    metrics on the parent run). Pickled with the Tuner: it holds names and ids only, so a restored sweep (the
    same plan, its parent run reopened) keeps logging into the same run."""

    def __init__(self, keys: Sequence[str], baseline: Mapping[str, Any], tracking_uri: str, parent_run_id: str):
        self.keys = list(keys)              # the grid's columns, as the trial's values hold them
        self.baseline = values_label(baseline, self.keys)
        self.tracking_uri, self.parent_run_id = tracking_uri, parent_run_id

    def on_trial_complete(self, iteration, trials, trial, **info):
        # Tune calls this before it marks the trial TERMINATED: it counts as finished from here
        finished = [t for t in trials if t.status == "TERMINATED" and t is not trial] + [trial]
        accuracies: dict[str, dict[int, float]] = {}        # configuration -> seed -> test accuracy
        cells: dict[str, dict] = {}                         # configuration -> its values
        for done in finished:
            acc, values = (done.last_result or {}).get("test_acc"), trial_values(done.config)
            if isinstance(acc, float):
                configuration = values_label(values, self.keys)
                accuracies.setdefault(configuration, {})[values["seed"]] = acc
                cells[configuration] = values
        values = trial_values(trial.config)
        configuration = values_label(values, self.keys)
        if values["seed"] not in accuracies.get(configuration, {}):
            return                          # finished without a test accuracy
        pairs = completed_pairs(accuracies, configuration, values["seed"], self.baseline)
        if not pairs:
            return
        running = [t for t in trials if t.status == "RUNNING" and t is not trial]
        pending = [t for t in trials if t.status in ("PENDING", "PAUSED")]
        eta = estimate_eta(running, pending, finished) if running or pending else None
        progress = f"{len(finished)}/{len(trials)} trials finished, " + (
            str(eta) if eta else "ETA once a trial has finished" if running or pending else "none left")
        for paired in pairs:
            key = configuration_key(self.keys, tuple(grid_value(cells[paired].get(k)) for k in self.keys))
            difference = running_difference(paired, key, accuracies[paired], accuracies[self.baseline])
            print(f"{difference.text(self.baseline)}; {progress}", flush=True)
            self.log(difference.metrics(), difference.seeds)
        self.log({f"{PREFIX}eta_s": eta.seconds if eta else 0.0, f"{PREFIX}trials_finished": len(finished)},
                 len(finished))

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """On the parent run; a store that fails costs a warning line, not the sweep."""
        from synthaug.core.tracking import RunLogger

        try:
            RunLogger(self.tracking_uri, self.parent_run_id).log_metrics(metrics, step=step)
        except Exception as err:  # noqa: BLE001 - the figures are printed; the analysis reads the trials' runs
            print(f"warning: could not log the live comparison to the sweep's MLflow run "
                  f"({str(err).splitlines()[0][:200]})", file=sys.stderr, flush=True)
