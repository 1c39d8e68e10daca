"""The running comparison with the baseline a sweep prints and logs while it runs (synthaug.live_comparison): its
arithmetic against scipy's paired t on planted numbers, and its lines and parent-run metrics as seeds complete."""

import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats as scipy_stats

from synthaug.sweep.live_comparison import LiveComparison, completed_pairs, running_difference

TREATMENT = {0: 0.6125, 1: 0.5840, 2: 0.6410, 5: 0.7000}       # seed 5: the baseline has not finished it
BASELINE = {0: 0.6010, 1: 0.5925, 2: 0.6030, 3: 0.5500}         # seed 3: the treatment has not


def test_the_running_difference_is_scipys_paired_t_over_the_common_seeds_in_percentage_points():
    seeds = [0, 1, 2]
    t, b = np.array([TREATMENT[s] for s in seeds]), np.array([BASELINE[s] for s in seeds])
    scipy_ci = scipy_stats.ttest_rel(t, b).confidence_interval(0.95)
    difference = running_difference("replace_pct=20", "replace_pct_20", TREATMENT, BASELINE)
    assert difference.seeds == 3
    assert difference.diff_pp == pytest.approx(100 * np.mean(t - b), abs=1e-9)
    assert (difference.ci_low_pp, difference.ci_high_pp) == (pytest.approx(100 * scipy_ci.low, abs=1e-9),
                                                              pytest.approx(100 * scipy_ci.high, abs=1e-9))
    assert difference.text("replace_pct=0") == (
        f"live replace_pct=20 vs replace_pct=0, 3 paired seeds so far: {100 * np.mean(t - b):+.2f} pp "
        f"(95% t interval {100 * scipy_ci.low:+.2f} to {100 * scipy_ci.high:+.2f})")
    assert set(difference.metrics()) == {"live.diff_pp.replace_pct_20", "live.ci_low_pp.replace_pct_20",
                                         "live.ci_high_pp.replace_pct_20"}
    one = running_difference("replace_pct=20", "replace_pct_20", {0: 0.61}, BASELINE)
    assert (one.seeds, one.diff_pp) == (1, pytest.approx(0.9)) and math.isnan(one.ci_low_pp)
    assert one.text("replace_pct=0").endswith("1 paired seed so far: +0.90 pp (an interval from 2 paired seeds)")
    assert set(one.metrics()) == {"live.diff_pp.replace_pct_20"}


def test_a_completed_trial_completes_its_pair_with_the_baseline_or_the_baselines_pairs():
    accuracies = {"p=0": {0: 0.5, 1: 0.5}, "p=2": {0: 0.6, 1: 0.6}, "p=4": {0: 0.7}}
    assert completed_pairs(accuracies, "p=2", 1, "p=0") == ["p=2"]
    assert completed_pairs(accuracies, "p=0", 0, "p=0") == ["p=2", "p=4"]
    assert completed_pairs(accuracies, "p=0", 1, "p=0") == ["p=2"]
    assert completed_pairs({"p=2": {0: 0.6}}, "p=2", 0, "p=0") == []       # the baseline's seed 0 not finished


def test_as_each_seed_pair_completes_one_line_and_the_parent_runs_metrics_at_that_many_paired_seeds(tmp_path,
                                                                                                    capsys):
    """Tune's Trial objects as the callback reads them (status, config, last_result), completing seed-major as a
    sweep of two configurations and three seeds does, logged to a real SQLite MLflow store."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    parent = client.create_run(client.create_experiment("live")).info.run_id
    live = LiveComparison(["replace_pct"], {"replace_pct": 0}, uri, parent)
    accuracy = {(0, s): BASELINE[s] for s in range(3)} | {(20, s): TREATMENT[s] for s in range(3)}
    trials = [SimpleNamespace(status="PENDING", config={"trial": {"cell": {"replace_pct": p}, "seed": s}},
                              last_result={}) for s in range(3) for p in (0, 20)]
    for trial in trials:
        trial.status = "RUNNING"
        trial.last_result = {"test_acc": accuracy[trial.config["trial"]["cell"]["replace_pct"],
                                                  trial.config["trial"]["seed"]], "time_total_s": 30.0}
        live.on_trial_complete(0, trials, trial)
        trial.status = "TERMINATED"
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("live ")]
    assert [re.search(r", (\d) paired seeds? so far", line).group(1) for line in lines] == ["1", "2", "3"]
    assert lines[0].endswith("(an interval from 2 paired seeds); 2/6 trials finished, ETA 0:02:00 (30 s a trial, "
                             "1 at a time)")
    assert lines[-1].endswith("; 6/6 trials finished, none left")
    final = running_difference("replace_pct=20", "", {s: TREATMENT[s] for s in range(3)}, BASELINE)
    assert f"{final.diff_pp:+.2f} pp (95% t interval {final.ci_low_pp:+.2f} to {final.ci_high_pp:+.2f})" in lines[-1]
    history = {name: sorted((m.step, m.value) for m in client.get_metric_history(parent, name))
               for name in ("live.diff_pp.replace_pct_20", "live.ci_low_pp.replace_pct_20", "live.eta_s",
                            "live.trials_finished")}
    assert [step for step, _ in history["live.diff_pp.replace_pct_20"]] == [1, 2, 3]
    assert history["live.diff_pp.replace_pct_20"][-1][1] == pytest.approx(final.diff_pp)
    assert history["live.ci_low_pp.replace_pct_20"] == [(2, pytest.approx(running_difference(
        "", "", {s: TREATMENT[s] for s in range(2)}, BASELINE).ci_low_pp)), (3, pytest.approx(final.ci_low_pp))]
    assert history["live.trials_finished"] == [(2, 2), (4, 4), (6, 6)]
    assert history["live.eta_s"] == [(2, 120.0), (4, 60.0), (6, 0.0)]
