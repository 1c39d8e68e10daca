"""A planted sweep through the real analysis: a SQLite MLflow store written as sweep.py and trial.py write it
(a parent run tagged synthaug.primary, a child run a trial with params, final metrics and predictions.csv),
then analysis/significance.py as a subprocess.

Planted, on 400 test images a seed and 4 seeds: the baseline (arm=none, augment_count=0) gets about 240 right;
200 synthetic images gain 12 images (3 pp), 100 gain 6, 200 withheld real images gain 24 (6 pp); each
configuration also swaps 5 of the baseline's right images for wrong ones (churn both ways). So one synthetic
image is worth about 0.5 real images. A second sweep holds two FINISHED runs of one seed. About 30 s.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from synthaug.analysis.results import Declaration, InputError, load_trials
from synthaug.core.tracking import CELL, PRIMARY, ROLE, SWEEP, RunLogger, ensure_experiment

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT, SWEEP_NAME, DUPLICATED = "long_tail", "long_tail-smoke-5678abcd", "long_tail-smoke-dup"
CLASSES, PER_CLASS, SEEDS, SWAPPED = ("airplane", "cat", "ship", "truck"), 100, (0, 1, 2, 3), 5
BASE_RIGHT = 240 + np.array([0, 5, -4, 3])                 # images the baseline gets right, by seed
GAINS = {("none", 0): np.zeros(4, int), ("synthetic", 100): 6 + np.array([1, 0, -1, 1]),
         ("synthetic", 200): 12 + np.array([0, 2, -1, 1]), ("withheld", 200): 24 + np.array([1, -2, 0, 2])}
DECLARED = {"primary": [["arm=synthetic,augment_count=200", ""], ["arm=synthetic", "arm=withheld"]],
            "trend": "augment_count", "trend_within": "arm=synthetic", "exchange": [["arm=synthetic", "arm=withheld"]]}
PARAMS = {"experiment": EXPERIMENT, "data": "shapes", "imbalance": 0.1, "real_per_class": 100,
          "test_per_class": PER_CLASS, "replace_pct": 0.0, "augment_classes": ["truck"], "generator": "ddpm-cond",
          "train.epochs": 1}


def correct(config: tuple[str, int], seed: int) -> np.ndarray:
    """Which of the seed's test images the configuration gets right, as planted."""
    order = np.random.default_rng([seed, 1]).permutation(len(CLASSES) * PER_CLASS)
    right = np.zeros(len(order), bool)
    right[order[:BASE_RIGHT[seed]]] = True
    if config == ("none", 0):
        return right
    rng = np.random.default_rng([seed, 2, len(config[0]), config[1]])
    lost = rng.choice(np.flatnonzero(right), SWAPPED, replace=False)
    won = rng.choice(np.flatnonzero(~right), GAINS[config][seed] + SWAPPED, replace=False)
    right[lost], right[won] = False, True
    return right


def write_trial(uri: str, experiment_id: str, parent: str, sweep: str, config: tuple[str, int], seed: int,
                folder: Path, key: str = "") -> str:
    arm, count = config
    run = RunLogger.for_trial(uri, experiment_id, parent, f"{arm}{count}_{seed}{key}_{sweep[-4:]}", f"seed={seed}",
                              {SWEEP: sweep, CELL: f"{arm}{count}"})
    run.log_params({**PARAMS, "arm": arm, "augment_count": count, "seed": seed})
    label = np.repeat(np.arange(len(CLASSES)), PER_CLASS)
    right = correct(config, seed)
    prediction = np.where(right, label, (label + 1) % len(CLASSES))
    metrics = {"test_acc": float(right.mean())}
    for c, name in enumerate(CLASSES):
        tp, predicted = np.sum(right & (label == c)), np.sum(prediction == c)
        recall, precision = tp / PER_CLASS, tp / predicted
        metrics |= {f"test_acc.{name}": recall, f"test_precision.{name}": precision,
                    f"test_f1.{name}": 2 * precision * recall / (precision + recall)}
    run.log_metrics(metrics, step=1)
    out = folder / run.run_id
    out.mkdir()
    pd.DataFrame({"test_index": np.arange(len(label)), "label": label, "prediction": prediction,
                  "confidence": 0.9, "correct": right}).to_csv(out / "predictions.csv", index=False)
    run.log_artifacts(out)
    run.finish("FINISHED")
    return run.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, list[str]]:
    """The store's URI and the run ids of the duplicated seed."""
    root = tmp_path_factory.mktemp("primary")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    experiment_id = ensure_experiment(uri, EXPERIMENT)
    parent = RunLogger.create(uri, experiment_id, DUPLICATED, {ROLE: "sweep", SWEEP: DUPLICATED})
    twice = [write_trial(uri, experiment_id, parent.run_id, DUPLICATED, ("none", 0), 0, root, key)
             for key in ("a", "b")]
    write_trial(uri, experiment_id, parent.run_id, DUPLICATED, ("synthetic", 200), 0, root)
    parent.finish()
    parent = RunLogger.create(uri, experiment_id, SWEEP_NAME, {ROLE: "sweep", SWEEP: SWEEP_NAME,
                                                               PRIMARY: json.dumps(DECLARED)})
    for config in GAINS:
        for seed in SEEDS:
            write_trial(uri, experiment_id, parent.run_id, SWEEP_NAME, config, seed, root)
    parent.finish()
    return uri, twice


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "analysis" / "significance.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def section(report: str, title: str) -> str:
    return report.split(f"\n## {title}\n")[1].split("\n## ")[0]


def test_the_report_leads_with_the_declared_primary_analysis(store, tmp_path):
    uri, _ = store
    done = run_cli("--experiment", EXPERIMENT, "--sweep", SWEEP_NAME, "--mlflow-uri", uri, "--out", str(tmp_path),
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n\n")[1].startswith("PRIMARY ANALYSIS")      # after the one-line header
    report = (tmp_path / "report.md").read_text()
    assert report.split("\n## ")[1].startswith("Primary analysis\n")
    primary = section(report, "Primary analysis")
    # the contrasts, expanded: synthetic 200 vs the baseline, synthetic vs withheld at the same count; synthetic
    # 100 has no withheld partner at 100, which the report names
    contrasts = pd.read_csv(tmp_path / "primary_contrasts.csv")
    assert list(zip(contrasts["configuration"], contrasts["baseline"])) == [
        ("arm=synthetic, augment_count=200", "arm=none, augment_count=0"),
        ("arm=synthetic, augment_count=200", "arm=withheld, augment_count=200")]
    assert "arm=synthetic, augment_count=100 pairs with 0 configurations" in primary
    # both tests, each interval saying what it covers, Holm over the family of 2 contrasts + 1 trend
    assert "covers seeds |" in primary and "covers seeds + test images" in primary
    assert "p (paired t, Holm)" in primary and "p (two-way t, Holm)" in primary and "Holm over 3" in primary
    planted = contrasts.iloc[0]
    assert planted["mean_diff"] == pytest.approx(np.mean(GAINS[("synthetic", 200)]) / 400)
    assert planted["two_way_mean_diff"] == pytest.approx(planted["mean_diff"])
    assert planted["two_way_ci_low"] < planted["mean_diff"] < planted["two_way_ci_high"]
    assert planted["n_images"] == len(CLASSES) * PER_CLASS and planted["n_pairs"] == len(SEEDS)
    assert planted["t_holm"] < 0.05 and planted["verdict"].startswith("higher")
    assert contrasts.iloc[1]["mean_diff"] < 0 and contrasts.iloc[1]["t_holm"] < 0.05
    trends = pd.read_csv(tmp_path / "primary_trends.csv")
    assert len(trends) == 1 and trends.iloc[0]["x"] == "0 100 200" and trends.iloc[0]["slope"] > 0
    assert trends.iloc[0]["two_way_slope"] == pytest.approx(trends.iloc[0]["slope"])
    assert trends.iloc[0]["n_images"] == len(CLASSES) * PER_CLASS and trends.iloc[0]["verdict"].startswith("rises")
    # the exchange rate, with Fieller's interval, in words
    rate = re.search(r"one synthetic image \(arm=synthetic, augment_count=200\) is worth ([\d.]+) real images "
                     r"\(arm=withheld, augment_count=200\) \[([-\d.]+), ([-\d.]+)\] \(Fieller 95%", primary)
    assert rate, primary
    assert 0.4 < float(rate.group(1)) < 0.6 and float(rate.group(2)) < float(rate.group(1)) < float(rate.group(3))
    # power at the declared effects from the sweep's own paired sd, not the observed effect
    power = section(report, "Power at declared effects")
    assert "| 0.3 |" in power and "| 0.5 |" in power and "| 1 |" in power and "not the observed effects" in power
    # no McNemar, no Wilcoxon, no unadjusted p in any table; the CSV keeps it, named so
    assert "McNemar" not in report and "Wilcoxon" not in report and "twice the mean" not in report
    for header in [line for line in report.splitlines() if line.startswith("| ") and "p (" in line]:
        cells = [c.strip() for c in header.strip("|").split("|")]
        assert all("Holm" in c for c in cells if c.startswith("p (")), header
    columns = pd.read_csv(tmp_path / "comparisons.csv").columns
    assert "t_pvalue_unadjusted" in columns and "t_pvalue" not in columns and "seeds_for_power" not in columns
    comparisons = pd.read_csv(tmp_path / "comparisons.csv").set_index("configuration")
    assert comparisons.loc["arm=synthetic, augment_count=200", "family"] == "primary"
    assert comparisons.loc["arm=withheld, augment_count=200", "family"] == "secondary"
    # precision and F1 beside recall, per configuration x class; churn a seed at a time, both ways
    per_class = section(report, "Per class (secondary)")
    assert "| precision (%) | precision diff (pp) | f1 (%) | f1 diff (pp) |" in per_class
    churn = pd.read_csv(tmp_path / "churn.csv")
    assert (churn["losses"] == SWAPPED).all() and len(churn) == 3 * len(SEEDS)
    gains = churn[churn["configuration"] == "arm=synthetic, augment_count=200"]["gains"]
    assert list(gains) == list(GAINS[("synthetic", 200)] + SWAPPED)
    # the analysis run carries the primary family's adjusted p-values and the exchange rate, no unadjusted p
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name(f"{EXPERIMENT}-analysis").experiment_id])[0]
    key = "arm_synthetic augment_count_200 vs arm_none augment_count_0"
    assert run.data.metrics[f"primary.p_holm.{key}"] == pytest.approx(planted["t_holm"])
    assert run.data.metrics[f"primary.two_way_p_holm.{key}"] == pytest.approx(planted["two_way_holm"])
    assert 0.4 < run.data.metrics["exchange.rate.arm_synthetic augment_count_200 vs arm_withheld augment_count_200"] < 0.6
    assert not [k for k in run.data.metrics if k.startswith("p.")]


def test_two_finished_runs_of_one_seed_are_refused_in_one_line(store, tmp_path):
    uri, twice = store
    done = run_cli("--experiment", EXPERIMENT, "--sweep", DUPLICATED, "--mlflow-uri", uri, "--no-log",
                   "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == "" and done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: --sweep: ") and "FINISHED runs of arm=none seed 0" in done.stderr
    assert all(run_id in done.stderr for run_id in twice) and "delete" in done.stderr and "--sweep" in done.stderr


def test_the_declaration_reads_the_tag_and_refuses_what_is_not_its_json(store):
    uri, _ = store
    assert load_trials(uri, EXPERIMENT, SWEEP_NAME).declaration == Declaration(
        primary=(("arm=synthetic,augment_count=200", ""), ("arm=synthetic", "arm=withheld")), trend="augment_count",
        trend_within="arm=synthetic", exchange=(("arm=synthetic", "arm=withheld"),))
    assert load_trials(uri, EXPERIMENT, DUPLICATED).declaration is None
    for text in ("[1, 2]", '{"primary": [["a"]]}', '{"primry": []}', "not json"):
        with pytest.raises(InputError, match=f"^tag {PRIMARY}: a JSON object with keys primary, trend"):
            Declaration.from_tag(text)
