"""What a sweep's differences cannot show: a baseline at the ceiling, or a generator whose samples agree with
their classes about as often as chance.

The smoke preset tests the wiring, not the science: on the built-in `shapes` data its baseline is about 99.5%
accurate, and its small generators make colour blobs the labeller names right about one time in five. A sweep
whose numbers look like that ends with one line saying so (README, "What smoke can and cannot show"), so
"replace_pct=10: -1.9 pp" is not read as a finding.
"""

from __future__ import annotations

from collections.abc import Mapping

CEILING = 0.98              # a mean baseline test accuracy at or above this leaves nothing to gain
NEAR_CHANCE = 2.0           # a labeller agreement below this many times chance (1 / classes) is near chance
WIRING = "differences here test the wiring, not whether synthetic data helps"


def caveat(baseline_acc: float | None, agreements: Mapping[str, float], num_classes: int) -> str | None:
    """The one line a sweep ends with when its differences cannot mean much, or None. `baseline_acc`: the mean
    test accuracy (a fraction) of its trials without synthetic images (None: none finished); `agreements`: each
    conditional generator's labeller agreement with its classes (a fraction)."""
    chance = 1 / num_classes
    reasons = []
    if baseline_acc is not None and baseline_acc >= CEILING:
        reasons.append(f"the baseline is at the ceiling ({baseline_acc:.1%} mean test accuracy, "
                       f"at least {CEILING:.0%})")
    reasons += [f"{name}'s samples agree with their classes {value:.0%} of the time (chance {chance:.0%})"
                for name, value in sorted(agreements.items()) if value < NEAR_CHANCE * chance]
    return f"note: {'; '.join(reasons)}: {WIRING}" if reasons else None


def print_caveat(plan, rows: list[dict], parent_run_id: str, num_classes: int) -> None:
    """Print caveat() for a finished sweep, if it has one: its baseline from the finished `rows` (grid values, seed, metrics), the
    agreements from the generators' MLflow runs (the parent run's synthaug.generator.<name>.run_id tags)."""
    from mlflow.tracking import MlflowClient

    from synthaug.config import to_flat
    from synthaug.training.trial import trial_config

    base, keys = to_flat(plan.base), [*plan.grid, "seed"]
    configs = [(r, trial_config({k: r[k] for k in keys}, base, plan.arms)) for r in rows]
    # the baseline adds nothing: no synthetic images, and none of the control arms' real ones either
    baseline = [r["test_acc"] for r, cfg in configs if r.get("done") and "test_acc" in r
                and not cfg.uses_synthetic and cfg.augmented_total == 0]
    client = MlflowClient(plan.tracking_uri)
    tags = client.get_run(parent_run_id).data.tags
    agreements = {}
    for name in plan.generators:
        run_id = tags.get(f"synthaug.generator.{name}.run_id")
        metrics = client.get_run(run_id).data.metrics if run_id else {}
        if "labeller_agreement" in metrics:
            agreements[name] = metrics["labeller_agreement"]
    line = caveat(sum(baseline) / len(baseline) if baseline else None, agreements, num_classes)
    if line:
        print(line)
