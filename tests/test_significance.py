"""Tests for synthaug.analysis.results, synthaug.analysis.significance and analysis/significance.py.

A real MLflow SQLite store in a temporary folder, written the way sweep.py and trial.py write
it: a parent run per sweep, a child run per trial with string params, per-epoch and final
metrics, and predictions.csv / manifest.json artifacts. Planted: replace_pct=2 improves the
truck class by 8-11 of 50 images on every seed (a large paired effect), replace_pct=4 moves
single images either way (no effect); replace_pct=2 has no run for seed 3 and replace_pct=4's
seed 4 failed. An older sweep in the same experiment must be ignored. About 20 s.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats as st

from synthaug.analysis.configurations import config_label, parse_baseline
from synthaug.analysis.results import FINISHED, InputError, Trials, load_predictions, load_trials
from synthaug.analysis.significance import analyse, compare, metric_key
from synthaug.core.tracking import CELL, ROLE, SWEEP, RunLogger, ensure_experiment
from synthaug.stats import compare as stats

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT, SWEEP_NAME = "replace_pct", "replace_pct-smoke-1234abcd"
CLASSES = ("cat", "airplane", "truck", "ship")        # the manifest's order, deliberately not sorted
PER_CLASS, SEEDS, EPOCHS = 50, (0, 1, 2, 3, 4), 2
# Correct test images of each class (out of 50) for the baseline, by seed and class.
BASE_CORRECT = 30 + np.array([0, 4, -3, 6, 2])[:, None] + np.array([0, 5, -5, 2])[None, :]
DELTAS = {
    0: np.zeros((5, 4), int),
    2: np.array([[0, 0, 9, 0], [0, 0, 11, 0], [0, 0, 10, 0], [0, 0, 12, 0], [0, 0, 8, 0]]),     # truck only
    4: np.array([[1, -1, 0, 0], [0, 1, 0, 0], [-1, 0, 0, 0], [1, 0, -1, 1], [0, 0, -1, 0]]),    # noise
}
MISSING, FAILED = (2, 3), (4, 4)                      # (replace_pct, seed)
BASE_PARAMS = {
    "experiment": EXPERIMENT, "data": "shapes", "imbalance": 1.0, "real_per_class": 100,
    "test_per_class": PER_CLASS, "replace_pct": 0.0, "augment_classes": [], "augment_count": 0,
    "generator": "ddpm-uncond", "train.epochs": EPOCHS, "train.batch_size": 64, "train.lr": 0.05,
    "train.momentum": 0.9, "train.nesterov": True, "train.schedule": "cosine", "train.width": 16,
}


def accuracy(pct: int) -> np.ndarray:
    """(seed, class) accuracies of a configuration, as planted."""
    return (BASE_CORRECT + DELTAS[pct]) / PER_CLASS


def predictions(pct: int, seed: int) -> pd.DataFrame:
    """The first k images of each class right, the rest wrong."""
    label = np.repeat(np.arange(len(CLASSES)), PER_CLASS)
    position = np.tile(np.arange(PER_CLASS), len(CLASSES))
    correct = position < (BASE_CORRECT + DELTAS[pct])[seed][label]
    return pd.DataFrame({"test_index": np.arange(len(label)), "label": label,
                         "prediction": np.where(correct, label, (label + 1) % len(CLASSES)),
                         "confidence": 0.9, "correct": correct})


def write_sweep(uri: str, experiment_id: str, sweep: str, grid: dict[int, tuple[int, ...]], folder: Path) -> str:
    parent = RunLogger.create(uri, experiment_id, sweep, {ROLE: "sweep", SWEEP: sweep})
    parent.log_params({"preset": "smoke", "seeds": list(SEEDS), "trials": 15, "grid.replace_pct": [0, 2, 4],
                       **{f"base.{k}": v for k, v in BASE_PARAMS.items()}})
    for pct, seeds in grid.items():
        for seed in seeds:
            write_trial(uri, experiment_id, parent.run_id, sweep, pct, seed, folder)
    parent.finish()
    return parent.run_id


def write_trial(uri: str, experiment_id: str, parent: str, sweep: str, pct: int, seed: int, folder: Path) -> None:
    """As trial.run_trial: for_trial, params, per-epoch metrics, then final metrics and artifacts."""
    run = RunLogger.for_trial(uri, experiment_id, parent, f"t{pct}_{seed}_{sweep[-4:]}", f"seed={seed}",
                              {SWEEP: sweep, CELL: f"cell{pct}"})
    run.log_params({**BASE_PARAMS, "replace_pct": pct, "seed": seed})      # grid values are ints
    run.log_metrics({"train_loss": 1.0, "test_acc": 0.1}, step=1)
    if (pct, seed) == FAILED:
        run.finish("FAILED")
        return
    acc = accuracy(pct)[seed]
    run.log_metrics({"train_loss": 0.5, "test_acc": float(acc.mean())}, step=EPOCHS)
    run.log_metrics({"test_acc": float(acc.mean()), **{f"test_acc.{c}": float(a) for c, a in zip(CLASSES, acc)}},
                    step=EPOCHS)
    out = folder / run.run_id
    out.mkdir()
    predictions(pct, seed).to_csv(out / "predictions.csv", index=False)
    (out / "manifest.json").write_text(json.dumps({"classes": [{"class": c, "index": i}
                                                               for i, c in enumerate(CLASSES)]}))
    run.log_artifacts(out)
    run.finish("FINISHED")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    experiment_id = ensure_experiment(uri, EXPERIMENT)
    files = root / "files"
    files.mkdir()
    write_sweep(uri, experiment_id, "replace_pct-smoke-older", {0: (0, 1), 2: (0, 1)}, files)
    grid = {pct: tuple(s for s in SEEDS if (pct, s) != MISSING) for pct in DELTAS}
    write_sweep(uri, experiment_id, SWEEP_NAME, grid, files)
    return uri


@pytest.fixture(scope="module")
def trials(store):
    return load_trials(store, EXPERIMENT)


@pytest.fixture(scope="module")
def result(store, trials):
    return analyse(trials, predictions=lambda run_id: load_predictions(store, run_id))


def test_load_trials_reads_the_newest_sweep_with_typed_params(trials):
    frame = trials.frame
    assert trials.sweep == SWEEP_NAME and set(frame["sweep"]) == {SWEEP_NAME}
    assert len(frame) == 14 and (frame["status"] == FINISHED).sum() == 13
    assert frame["replace_pct"].dtype == float and sorted(frame["replace_pct"].unique()) == [0.0, 2.0, 4.0]
    assert frame["seed"].dtype == np.int64 and frame["train.epochs"].dtype == np.int64
    assert frame["train.nesterov"].dtype == bool and frame["train.lr"].dtype == float
    assert set(frame["augment_classes"]) == {""}
    assert trials.config_columns == ("replace_pct",)
    assert trials.classes == CLASSES
    done = frame[frame["status"] == FINISHED].set_index(["replace_pct", "seed"])
    assert done.loc[(2.0, 1), "test_acc"] == pytest.approx(accuracy(2)[1].mean())     # final, not epoch 1
    assert done.loc[(2.0, 1), "test_acc.truck"] == pytest.approx(accuracy(2)[1][2])


def test_grouping_and_pairing(result):
    assert result.baseline == "replace_pct=0"
    assert list(result.summary["configuration"]) == ["replace_pct=0", "replace_pct=2", "replace_pct=4"]
    assert list(result.summary["n"]) == [5, 4, 4]
    pairs = result.pairs.groupby("configuration")["seed"].apply(list).to_dict()
    assert pairs == {"replace_pct=2": [0, 1, 2, 4], "replace_pct=4": [0, 1, 2, 3]}
    assert set(result.comparisons["test"]) == {"paired"}


def test_paired_differences_match_numpy(result):
    seeds = [0, 1, 2, 4]
    d = accuracy(2).mean(1)[seeds] - accuracy(0).mean(1)[seeds]
    half = st.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    row = result.comparisons.set_index("configuration").loc["replace_pct=2"]
    assert row["mean_diff"] == pytest.approx(d.mean())
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert row["t_pvalue"] == pytest.approx(st.ttest_rel(accuracy(2).mean(1)[seeds], accuracy(0).mean(1)[seeds]).pvalue)
    assert row["cohens_dz"] == pytest.approx(d.mean() / d.std(ddof=1))
    summary = result.summary.set_index("configuration").loc["replace_pct=0"]
    assert summary["mean"] == pytest.approx(accuracy(0).mean(1).mean())


def test_planted_effect_is_significant_and_the_null_is_not(result):
    c = result.comparisons.set_index("configuration")
    assert c.loc["replace_pct=2", "t_holm"] < 0.01 and c.loc["replace_pct=2", "ci_low"] > 0
    assert c.loc["replace_pct=4", "t_pvalue"] > 0.2 and c.loc["replace_pct=4", "ci_low"] < 0
    significant = result.per_class[result.per_class["q_bh"] < 0.05]
    assert list(zip(significant["configuration"], significant["class"])) == [("replace_pct=2", "truck")]
    # churn, a seed at a time: the truck images each seed gains, none lost; no p-value
    churn = result.churn[result.churn["configuration"] == "replace_pct=2"]
    assert list(churn["seed"]) == [0, 1, 2, 4] and list(churn["gains"]) == [9, 11, 10, 8]
    assert set(churn["losses"]) == {0} and set(churn["images"]) == {len(CLASSES) * PER_CLASS}
    assert not [c for c in result.churn.columns if "p" in c.split("_")]


def test_warnings_name_the_failed_run_and_the_missing_seed(result):
    text = "\n".join(result.warnings)
    assert "1 of 14 trial runs left out as not FINISHED (1 FAILED)" in text
    assert "replace_pct=2: no finished run for seed(s) 3" in text
    assert "replace_pct=4: no finished run for seed(s) 4" in text


def test_baseline_by_name_and_bad_baselines(trials):
    assert analyse(trials, parse_baseline("replace_pct=2")).baseline == "replace_pct=2"
    assert parse_baseline("augment_classes=truck,ship,augment_count=500") == {
        "augment_classes": "truck,ship", "augment_count": "500"}
    for text, words in [("replace_pct", "expected key=value"), ("lr=1", "unknown column 'lr'; one of: replace_pct"),
                        ("replace_pct=3", "replace_pct in 0, 2, 4"), ("replace_pct=x", "takes a number")]:
        with pytest.raises(InputError, match="^--baseline: .*" + words):
            analyse(trials, parse_baseline(text))


def test_unpaired_comparison_falls_back_to_welch():
    a, b = [0.80, 0.82, 0.81], [0.70, 0.72, 0.71]
    row = compare(pd.Series(a, index=[0, 1, 2]), pd.Series(b, index=[3, 4, 5]))
    assert row["test"] == "welch" and row["n_pairs"] == 0
    assert row["t_pvalue"] == pytest.approx(st.ttest_ind(a, b, equal_var=False).pvalue)


def test_labels_and_metric_keys():
    assert config_label({"replace_pct": 2.0, "augment_classes": "", "train.lr": 0.05}) == \
        "replace_pct=2, augment_classes=none, train.lr=0.05"
    assert config_label({"augment_classes": "truck,ship", "augment_count": 500}) == \
        "augment_classes=truck+ship, augment_count=500"
    assert metric_key("replace_pct=2, augment_count=500") == "replace_pct_2 augment_count_500"


def test_input_errors_name_the_flag(store):
    with pytest.raises(InputError, match="^--experiment: no experiment 'nope' .* replace_pct"):
        load_trials(store, "nope")
    with pytest.raises(InputError, match="^--sweep: no trial runs for sweep 'x' .*replace_pct-smoke-older"):
        load_trials(store, EXPERIMENT, sweep="x")
    with pytest.raises(InputError, match="^--metric: 'val_acc' .* test_acc"):
        load_trials(store, EXPERIMENT, metric="val_acc")


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "analysis" / "significance.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_the_report_and_logs_an_analysis_run(store, tmp_path):
    done = run_cli("--experiment", EXPERIMENT, "--mlflow-uri", store, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "replace_pct=2" in done.stdout and "analysis run:" in done.stdout
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"report.md", "summary.csv", "comparisons.csv", "per_class.csv", "churn.csv", "power.csv", "means.png",
            "differences.png"} <= names
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| replace_pct=2 | truck |" in report and "left out as not FINISHED" in report
    # the store's sweep declared nothing: the report says so first, and every comparison is secondary
    assert report.split("\n## ")[1].startswith("Primary analysis\n\nno primary analysis was declared; every "
                                                 "comparison is secondary")
    assert set(pd.read_csv(tmp_path / "out" / "comparisons.csv")["family"]) == {"secondary"}
    client = MlflowClient(store)
    # the analysis run's dozens of metrics stay out of the sweep experiment's runs (its list and charts)
    sweep_runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert sweep_runs and not [k for r in sweep_runs for k in r.data.metrics if k.startswith(("diff", "p.", "mean."))]
    analysis = client.get_experiment_by_name(f"{EXPERIMENT}-analysis")
    assert analysis.tags["mlflow.experimentKind"] == "custom_model_development"
    assert EXPERIMENT in analysis.tags["mlflow.note.content"]
    runs = client.search_runs([analysis.experiment_id],
                              f"tags.`{ROLE}` = 'analysis' and tags.`{SWEEP}` = '{SWEEP_NAME}'")
    assert len(runs) == 1 and runs[0].info.status == FINISHED
    assert runs[0].data.metrics["diff.replace_pct_2"] == pytest.approx(
        np.mean(accuracy(2).mean(1)[[0, 1, 2, 4]] - accuracy(0).mean(1)[[0, 1, 2, 4]]))
    assert {"report.md", "means.png"} <= {f.path for f in client.list_artifacts(runs[0].info.run_id)}


def test_cli_bad_baseline_exits_2_with_one_line(store, tmp_path):
    done = run_cli("--experiment", EXPERIMENT, "--mlflow-uri", store, "--baseline", "replace_pct", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: --baseline: expected key=value")


def test_cli_other_input_errors_exit_2(store, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("significance_cli", REPO / "analysis" / "significance.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    for args, start in [(["--experiment", "nope"], "error: --experiment: "),
                        (["--experiment", EXPERIMENT, "--baseline", "lr=0"], "error: --baseline: unknown column"),
                        (["--experiment", EXPERIMENT, "--metric", "loss"], "error: --metric: ")]:
        assert cli.main([*args, "--mlflow-uri", store, "--no-log", "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(start) and err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2 and capsys.readouterr().err.startswith("error: the following arguments")


def test_unreadable_predictions_are_warned_about_and_skipped(trials):
    def missing(run_id: str) -> pd.DataFrame:
        raise FileNotFoundError(run_id)
    result = analyse(trials, predictions=missing)
    assert result.churn.empty and "no readable predictions.csv (FileNotFoundError)" in "\n".join(result.warnings)


def test_accuracy_intervals_stay_within_0_and_1_and_the_report_says_what_the_exact_tests_can_reach():
    from synthaug.analysis.significance import LABEL, reach_warnings, summarise

    configs = pd.DataFrame({LABEL: ["near-perfect"]})
    values = {"near-perfect": pd.Series([0.999, 1.0, 0.97], index=[0, 1, 2])}
    row = summarise(configs, values, "near-perfect", 0.95, 0, bounded=True).iloc[0]
    assert 0 <= row["ci_low"] < row["mean"] <= row["ci_high"] <= 1.0 and row["bca_high"] <= 1.0
    assert "angular scale" in row["ci_method"] and row["unit"] == "fraction (0-1)"
    unbounded = summarise(configs, values, "near-perfect", 0.95, 0).iloc[0]
    assert unbounded["ci_high"] > 1.0                                  # what the angular scale prevents
    comparisons = pd.DataFrame({"test": ["paired"] * 7, "n_pairs": [3] * 7, "family": ["primary"] + ["secondary"] * 6})
    assert reach_warnings(comparisons) == [
        "with 3 paired seeds the sign-flip test cannot give p below 2/2^3 = 0.25, and after Holm over 6 secondary "
        "comparison(s) not below 1: it cannot reach 0.05; 8 seeds can"]
    comparisons["n_pairs"] = 8
    assert "(8 seeds are the fewest that reach 0.05)" in reach_warnings(comparisons)[0]


def test_the_comparison_columns_and_the_report_headers_come_from_paired_result(result):
    from synthaug.analysis.significance_report import markdown_report

    fields = dataclasses.fields(stats.PairedResult)
    names = [f.name for f in fields if f.name != "n"]           # n is n_pairs in a comparison row
    assert [c for c in result.comparisons.columns if c in names] == names
    details = markdown_report(result).split("## Secondary tests in detail")[1].split("\n## ")[0]
    shown = [f.metadata["header"] for f in fields if f.metadata.get("shown_as", "p") != "p"]
    assert shown and all(f"| {header} |" in details for header in shown)
    # a p-value only after Holm within the family, never the raw one beside it
    assert "| p (t, Holm) |" in details and "| p (sign-flip, Holm) |" in details and "| p (t) |" not in details


def ceiling_trials() -> Trials:
    """A sweep at the ceiling, built in memory: replace_pct 0, 2, 4 with 3 seeds of per-class accuracies near
    100%; 6 and 8 with 2 seeds: 6 exactly 1 point below the baseline on both (two seeds that agree), 8 two
    nearly equal losses (a huge dz from two seeds)."""
    per_seed = {0: [[1.0, 0.99], [0.98, 1.0], [1.0, 0.97]], 2: [[1.0, 1.0], [0.99, 0.995], [1.0, 0.98]],
                4: [[0.995, 1.0], [1.0, 1.0], [0.97, 0.99]], 6: [[1.0, 1.0], [0.99, 1.0]],
                8: [[1.0, 1.0], [0.99, 1.0]]}
    gain = {0: 0.0, 2: 0.0, 4: 0.0, 6: -0.01, 8: None}
    rows = []
    for pct, seeds in per_seed.items():
        for seed, (a, b) in enumerate(seeds):
            base = np.mean(per_seed[0][seed])
            total = base + gain[pct] if gain[pct] is not None else base - (0.004 if seed == 0 else 0.0041)
            total = float(np.mean([a, b])) if pct in (0, 2, 4) else total
            rows.append({"run_id": f"r{pct}_{seed}", "status": FINISHED, "seed": seed, "replace_pct": pct,
                         "start_time": pd.Timestamp(2026, 1, 1) + pd.Timedelta(minutes=len(rows)),
                         "test_acc": total, "test_acc.a": a, "test_acc.b": b})
    return Trials(pd.DataFrame(rows), ("replace_pct",), ("a", "b"), EXPERIMENT, "ceiling", None, "test_acc",
                  "sqlite:///unused.db")


def test_at_the_ceiling_intervals_stay_in_0_100_pct_two_agreeing_seeds_give_none_and_power_needs_3():
    from synthaug.analysis.figures import per_class_accuracy
    from synthaug.analysis.significance_report import NO_INTERVAL, format_table, markdown_report

    trials = ceiling_trials()
    result = analyse(trials)
    table = per_class_accuracy(trials, result)
    assert {"acc_pct", "sd_pp", "ci95_low_pct", "ci95_high_pct", "ci_note", "ci_covers"} <= set(table.columns)
    bounds = table[["ci95_low_pct", "ci95_high_pct"]].to_numpy(float)
    assert np.isfinite(bounds[table["n_seeds"] >= 3]).any()
    assert ((bounds >= 0) & (bounds <= 100) | np.isnan(bounds)).all()
    # what a t interval on the raw scale gives for the same per-class values
    raw = [stats.describe(group.to_numpy(float)) for _, group in trials.frame.groupby("replace_pct")["test_acc.b"]]
    assert any(d.ci_high > 1 for d in raw)
    assert (table["acc_pct"].between(0, 100) & (table["sd_pp"].isna() | (table["sd_pp"] < 5))).all()
    # no zero-width interval anywhere: two seeds that agree give none, and say why
    summary = result.summary.set_index("configuration")
    finite = summary[["ci_low", "ci_high"]].dropna()
    assert (finite["ci_high"] > finite["ci_low"]).all() and (finite.to_numpy() <= 1).all()
    c = result.comparisons.set_index("configuration")
    assert np.isnan(c.loc["replace_pct=6", "ci_low"]) and np.isnan(c.loc["replace_pct=6", "ci_high"])
    assert table.loc[table["ci95_low_pct"].isna() & (table["n_seeds"] >= 2), "ci_note"].str.startswith(
        "not estimable").all()
    # no power at an observed effect, however large its dz: only at the declared effects, from the paired sd
    assert abs(c.loc["replace_pct=8", "cohens_dz"]) > 10 and "seeds_for_power" not in c.columns
    assert list(result.power["effect"]) == [0.003, 0.005, 0.01]
    report = markdown_report(result)
    assert "seeds for 80% power" in report.split("## Power at declared effects")[1].split("\n## ")[0]
    assert NO_INTERVAL in format_table(result)
    assert "test_acc (%) 95% CI" in format_table(result) and "diff vs baseline (pp) 95% CI" in format_table(result)
    # each warning once: one line for the two configurations with 2 seeds
    few = [w for w in result.warnings if "fewer than 3 finished seeds" in w]
    assert len(few) == 1 and "replace_pct=6 (2); replace_pct=8 (2)" in few[0]
    assert len(result.warnings) == len(set(result.warnings))
