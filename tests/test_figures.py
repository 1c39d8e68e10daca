"""Tests for synthaug.analysis.figures and analysis/figures.py.

A real MLflow SQLite store in a temporary folder, written as sweep.py and trial.py write it
(the approach of test_significance.py): a parent run, a child run per trial with string
params, final per-class metrics and manifest.json / confusion_matrix.csv artifacts. Planted:
replace_pct=2 gains 8-12 truck images of 50 on every seed (BH-significant), replace_pct=4
is noise. A pool store beside it holds a conditional and an unconditional generator's
pools. About 15 s.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from synthaug.analysis.figures import ANALYSIS, paired_confusion_difference, row_normalise, slug
from synthaug.analysis.sample_grids import class_rows
from synthaug.core import report
from synthaug.core.tracking import CELL, ROLE, SWEEP, RunLogger, ensure_experiment
from synthaug.diffusion.sampling import SamplerConfig
from synthaug.pools.store import UNCONDITIONAL, PoolKey, PoolStore

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT, SWEEP_NAME = "replace_pct", "replace_pct-smoke-figs0001"
CLASSES = ("cat", "airplane", "truck", "ship")        # the manifest's order, deliberately not sorted
PER_CLASS, SEEDS, REAL = 50, (0, 1, 2), 100
BASE_CORRECT = 30 + np.array([0, 4, -3])[:, None] + np.array([0, 5, -5, 2])[None, :]
DELTAS = {0: np.zeros((3, 4), int),
          2: np.array([[0, 0, 9, 0], [0, 0, 11, 0], [0, 0, 12, 0]]),
          4: np.array([[1, -1, 0, 0], [0, 1, -1, 0], [-1, 0, 1, 0]])}
COND, UNCOND = "c" * 64, "u" * 64                     # weights digests of the two generators
PARAMS = {"experiment": EXPERIMENT, "data": "shapes", "imbalance": 1.0, "real_per_class": REAL,
          "test_per_class": PER_CLASS, "augment_classes": [], "augment_count": 0, "generator": "ddpm-uncond",
          "train.epochs": 2, "train.lr": 0.05}


def confusion(pct: int, seed: int) -> np.ndarray:
    """Right on the planted count of each class; every mistake goes to the next class."""
    correct = (BASE_CORRECT + DELTAS[pct])[seed]
    matrix = np.diag(correct)
    for c, k in enumerate(correct):
        matrix[c, (c + 1) % len(CLASSES)] += PER_CLASS - k
    return matrix


def manifest(pct: int, seed: int) -> dict:
    replaced = round(REAL * pct / 100)
    rows = [{"class": c, "index": i, "real_target": REAL, "real": REAL - replaced, "replaced": replaced,
             "augmented": 0, "synthetic": replaced} for i, c in enumerate(CLASSES)]
    return {"experiment": EXPERIMENT, "seed": seed, "replace_pct": pct, "classes": rows}


def write_trial(uri: str, experiment_id: str, parent: str, pct: int, seed: int, folder: Path) -> None:
    run = RunLogger.for_trial(uri, experiment_id, parent, f"t{pct}_{seed}", f"seed={seed}",
                              {SWEEP: SWEEP_NAME, CELL: f"cell{pct}"})
    run.log_params({**PARAMS, "replace_pct": pct, "seed": seed})
    acc = (BASE_CORRECT + DELTAS[pct])[seed] / PER_CLASS
    run.log_metrics({"test_acc": float(acc.mean()), **{f"test_acc.{c}": float(a) for c, a in zip(CLASSES, acc)}},
                    step=2)
    out = folder / run.run_id
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps(manifest(pct, seed)))
    report.write_confusion(out, confusion(pct, seed), CLASSES)
    run.log_artifacts(out)
    run.finish("FINISHED")


def write_pools(cache: Path) -> None:
    """A conditional generator (a pool a class, class c's images filled with value 10c) and an
    unconditional one whose labeller never chose 'ship'; their generator folders name them."""
    store = PoolStore(cache / "pools")
    sampler = SamplerConfig(steps=4)
    for c in range(len(CLASSES)):
        key = PoolKey(COND, sampler, c, "", 0, "cpu/float32")
        store.append(key, 0, np.full((10, 32, 32, 3), 10 * c, np.uint8), np.full(10, c), np.ones(10), "here")
    labels = np.array([0, 1, 2, 0, 1, 2] * 4)
    store.append(PoolKey(UNCOND, sampler, UNCONDITIONAL, "l" * 64, 0, "cpu/float32"), 0,
                 np.full((len(labels), 32, 32, 3), 200, np.uint8), labels, np.full(len(labels), 0.7), "here")
    for name, digest in (("ddpm-cond-0123456789abcdef", COND), ("ddpm-uncond-fedcba9876543210", UNCOND)):
        (cache / "generators" / name).mkdir(parents=True)
        (cache / "generators" / name / "weights.sha256").write_text(digest + "\n")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp("figstore")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    experiment_id = ensure_experiment(uri, EXPERIMENT)
    parent = RunLogger.create(uri, experiment_id, SWEEP_NAME, {ROLE: "sweep", SWEEP: SWEEP_NAME})
    parent.log_params({"preset": "smoke", **{f"base.{k}": v for k, v in PARAMS.items()}, "base.replace_pct": 0.0})
    files = root / "files"
    files.mkdir()
    for pct in DELTAS:
        for seed in SEEDS:
            write_trial(uri, experiment_id, parent.run_id, pct, seed, files)
    parent.finish()
    write_pools(root / "cache")
    return uri, root / "cache"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "analysis" / "figures.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=180)


def test_cli_draws_every_figure_and_logs_an_analysis_run(store, tmp_path):
    uri, cache = store
    out = tmp_path / "figs"
    done = run_cli("--experiment", EXPERIMENT, "--mlflow-uri", uri, "--cache", str(cache), "--out", str(out),
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    pngs = {p.name for p in out.glob("*.png")}
    assert {"composition.png", "per_class_accuracy.png", "confusion_baseline.png", "confusion_replace_pct_2.png",
            "confusion_diff_replace_pct_2.png", "confusion_diff_replace_pct_4.png", "accuracy_vs_replace_pct.png",
            "samples.png"} <= pngs
    assert "note:" not in done.stdout and "analysis run:" in done.stdout

    per_class = pd.read_csv(out / "per_class_accuracy.csv")
    marked = per_class[per_class["significant"]]
    assert list(zip(marked["configuration"], marked["class"])) == [("replace_pct=2", "truck")]
    truck = per_class.set_index(["configuration", "class"]).loc[("replace_pct=2", "truck")]
    assert truck["acc_pct"] == pytest.approx(100 * ((BASE_CORRECT + DELTAS[2])[:, 2] / PER_CLASS).mean())
    assert truck["ci95_low_pct"] < truck["acc_pct"] < truck["ci95_high_pct"] and truck["n_seeds"] == 3
    bounds = per_class[["ci95_low_pct", "ci95_high_pct"]].to_numpy(float)
    assert ((bounds >= 0) & (bounds <= 100) | np.isnan(bounds)).all()
    assert per_class["ci_covers"].str.startswith("seed-to-seed variation").all()

    composition = pd.read_csv(out / "composition.csv").set_index(["configuration", "class"])
    assert tuple(composition.loc[("replace_pct=4", "ship"), ["real", "replaced"]]) == (96, 4)

    diff = pd.read_csv(out / "confusion_diff_replace_pct_2.csv").to_numpy()
    expected = np.mean([row_normalise(confusion(2, s)) - row_normalise(confusion(0, s)) for s in SEEDS], axis=0)
    assert diff == pytest.approx(expected)
    axis = pd.read_csv(out / "accuracy_vs_replace_pct.csv")
    assert list(axis["replace_pct"]) == [0, 2, 4] and len(pd.read_csv(out / "accuracy_vs_replace_pct_seeds.csv")) == 9
    samples = pd.read_csv(out / "samples.csv").set_index(["generator", "class"])
    assert samples.loc[("ddpm-cond", "ship"), "images"] == 8 and samples.loc[("ddpm-uncond", "ship"), "images"] == 0

    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    assert not client.search_runs([experiment_id], f"tags.`{ROLE}` = 'analysis'")     # in its own experiment
    experiment_id = client.get_experiment_by_name(f"{EXPERIMENT}-analysis").experiment_id
    runs = client.search_runs([experiment_id], f"tags.`{ROLE}` = 'analysis' and tags.`{ANALYSIS}` = 'figures'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags[SWEEP] == SWEEP_NAME
    assert {"samples.png", "per_class_accuracy.png"} <= {f.path for f in client.list_artifacts(runs[0].info.run_id)}


def test_without_pools_the_sample_grid_is_skipped_and_bad_input_exits_2(store, tmp_path, capsys):
    uri, _ = store
    spec = importlib.util.spec_from_file_location("figures_cli", REPO / "analysis" / "figures.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main(["--experiment", EXPERIMENT, "--mlflow-uri", uri, "--cache", str(tmp_path / "none"),
                     "--out", str(tmp_path / "o"), "--no-log"]) == 0
    assert "note: sample grid skipped: no synthetic pools" in capsys.readouterr().out
    assert not (tmp_path / "o" / "samples.png").exists() and (tmp_path / "o" / "composition.png").exists()
    for args, start in [(["--experiment", "nope"], "error: --experiment: "),
                        (["--experiment", EXPERIMENT, "--sweep", "x"], "error: --sweep: "),
                        (["--experiment", EXPERIMENT, "--baseline", "lr=0"], "error: --baseline: ")]:
        assert cli.main([*args, "--mlflow-uri", uri, "--no-log", "--out", str(tmp_path / "b")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(start) and err.count("\n") == 1, err


def test_small_helpers():
    assert slug("replace_pct=2, augment_classes=truck+ship") == "replace_pct_2-augment_classes_truck+ship"
    assert paired_confusion_difference({0: np.eye(2)}, {1: np.eye(2)}) is None
    rows = class_rows(np.zeros((2, 32, 32, 3), np.uint8), np.array([1, 1]), num_classes=3, per_class=4)
    assert rows.shape == (96, 128, 3) and rows[32:64, :64].max() == 0 and rows[:32].min() == 255
    assert row_normalise(np.array([[1.0, 3.0], [0.0, 0.0]])).tolist() == [[0.25, 0.75], [0.0, 0.0]]
