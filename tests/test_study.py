"""sweeps/study.py: the study as one job (synthaug.study.experiments, synthaug.study.study_job): --only, the paper dry run, and one
tiny study run to FINISHED on real Ray and a real SQLite MLflow store, then rerun with nothing retrained."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDY = str(ROOT / "sweeps" / "study.py")


def _run(argv: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, STUDY, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_only_takes_ids_aliases_and_script_names():
    from synthaug.study.experiments import chosen_items
    from synthaug.sweep.sweep_inputs import UsageError

    ids = lambda only, extended=False: [i.id for i in chosen_items(only, extended)]
    assert ids(None) == ["E1+E2", "E2a", "E3", "E4", "E5"]         # sample_count goes past the study
    assert ids(None, extended=True)[-1] == "sample_count"
    assert ids("E4,E2") == ["E1+E2", "E2a", "E4"]                  # E2: both of its sweeps, in the study's order
    assert ids("replace_pct,e3,fidelity") == ["E3", "E4", "E5"]
    assert ids("sample_count") == ["sample_count"]
    for bad in ("E9", "", "E4,,long_tails"):
        try:
            chosen_items(bad, False)
        except UsageError as err:
            assert str(err).startswith("--only: ") and "\n" not in str(err)
        else:
            raise AssertionError(f"--only {bad!r} was taken")


def test_bad_only_is_one_line_and_exit_2_with_nothing_written(tmp_path):
    proc = _run(["--only", "E2,E9", "--preset", "tiny"], tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "--only" in proc.stderr
    assert os.listdir(tmp_path) == []


def test_paper_dry_run_counts_every_experiment_and_the_totals(tmp_path):
    """The study's dry run at the paper preset, on a machine without CIFAR-10 or DiT: every experiment, its trials,
    and the study's total GPU-hours; nothing started, downloaded or written."""
    proc = _run(["--preset", "paper", "--dry-run"], tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for item, script in (("E1+E2", "long_tail"), ("E2a", "imagenet_targeted"), ("E3", "cond_vs_uncond"),
                         ("E4", "replace_pct")):
        line = next(line for line in out.splitlines() if line.strip().startswith(item))
        assert script in line and " trials = " in line and "x 8 seeds" in line, line
    assert "sample_count" not in out
    assert any(line.strip().startswith("E5") and "fidelity" in line for line in out.splitlines())
    total = next(line for line in out.splitlines() if line.startswith("total: "))
    trials = sum(int(line.split()[2]) for line in out.splitlines()
                 if line.strip().startswith(("E1+E2", "E2a", "E3", "E4")))
    assert total.startswith(f"total: {trials} trials; ") and "GPU-h" in total, total
    assert "wall time on" in out
    assert os.listdir(tmp_path) == []


def test_tiny_study_runs_to_finished_then_a_rerun_retrains_nothing(tmp_path):
    """Two cheap experiments (E4 from the conditional DDPM: tiny's unconditional one labels too few images of some
    classes; and E5 at 4 samples a class) at the tiny preset, 2 seeds, on one Ray session: the
    study run FINISHED with its tags, E4's parent run and E5's fidelity run under it in their own experiments; the
    same command again skips both, trains nothing and reopens the study run; the analysis script reads the study's
    sweep as any sweep's."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    argv = ["--preset", "tiny", "--data", "shapes", "--seeds", "2", "--only", "E4,E5", "--mlflow-uri", uri,
            "--set", "preset.fidelity_per_class=4", "--set", "generator=ddpm-cond",   # tiny's unconditional DDPM
            "--cache", str(tmp_path / "cache"),
            "--storage", str(tmp_path / "ray")]
    first = _run(argv, tmp_path, timeout=1500)
    assert first.returncode == 0, (first.stdout[-3000:], first.stderr[-3000:])

    client = MlflowClient(uri)
    study = client.get_experiment_by_name("study")
    [run] = client.search_runs([study.experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "study tiny: E4,E5, 2 seeds"
    assert run.data.tags["synthaug.role"] == "study" and run.data.tags["synthaug.study"].startswith("study-tiny-")
    sweeps = json.loads(run.data.tags["synthaug.study.sweeps"])
    assert sweeps["E4"]["experiment"] == "replace_pct" and sweeps["E5"]["experiment"] == "fidelity"
    replace_pct = client.get_experiment_by_name("replace_pct").experiment_id
    [parent] = client.search_runs([replace_pct], f"tags.`synthaug.sweep` = '{sweeps['E4']['sweep']}' "
                                                 "and tags.`synthaug.role` = 'sweep'")
    fidelity = client.get_run(sweeps["E5"]["run_id"])
    from synthaug.study.study_inputs import parse_sweeps_tag  # what analysis/study_report.py reads of it

    refs, fidelity_run = parse_sweeps_tag(run.data.tags["synthaug.study.sweeps"])
    assert {k: (r.experiment, r.sweep) for k, r in refs.items()} == {"E4": ("replace_pct", sweeps["E4"]["sweep"])}
    assert fidelity_run == fidelity.info.run_id and run.data.tags["synthaug.study.left_out"] == "{}"
    for child in (parent, fidelity):
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == run.info.run_id
        assert child.data.tags["synthaug.study"] == run.data.tags["synthaug.study"]
    trials = client.search_runs([replace_pct], "tags.`synthaug.role` = 'trial'", max_results=1000)
    assert len(trials) == 7 * 2 and all(r.info.status == "FINISHED" for r in trials)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials)
    # the servers are the study's, named in its scope and kept across its sweeps (synthaug.sweep.runner.SharedServers)
    assert "since it started (it serves other sweeps too)" in first.stdout

    again = _run(argv, tmp_path, timeout=900)
    assert again.returncode == 0, (again.stdout[-3000:], again.stderr[-3000:])
    assert "E4 replace_pct: sweep " in again.stdout and "finished before: skipped (nothing retrained)" in again.stdout
    assert f"E5 fidelity: run {fidelity.info.run_id} finished before: skipped" in again.stdout
    assert "reopened its MLflow run" in again.stdout and "training generator" not in again.stdout + again.stderr
    [rerun] = client.search_runs([study.experiment_id])
    assert rerun.info.run_id == run.info.run_id and rerun.info.status == "FINISHED"
    assert len(client.search_runs([replace_pct], "tags.`synthaug.role` = 'trial'", max_results=1000)) == len(trials)
    assert len(client.search_runs([fidelity.info.experiment_id])) == 1

    analysis = subprocess.run([sys.executable, str(ROOT / "analysis" / "significance.py"), "--experiment",
                               "replace_pct", "--sweep", sweeps["E4"]["sweep"], "--mlflow-uri", uri, "--no-log"],
                              cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                              text=True, timeout=600)
    assert analysis.returncode == 0, analysis.stderr[-2000:]


def test_the_first_sweep_prepares_the_generators_later_sweeps_train_each_once(tmp_path):
    """A study's first sweep prepares its later sweeps' generators in the same batch (no core idles while one trains
    or is scored alone): one a cache key (ddpm-uncond's filtered variants share its weights), none the first sweep
    prepares itself, none pretrained (nothing to train or score)."""
    import dataclasses

    from synthaug.config import IMAGENET_DIT, PRESETS
    from synthaug.data.sources import load_dataset
    from synthaug.generation.serving import generators_ahead

    smoke = PRESETS["smoke"]
    dataset = load_dataset("shapes", tmp_path / "cache")
    named = {name: (smoke.generator(name), None) for name in ("ddpm-cond", "ddpm-uncond", "ddpm-uncond-confident",
                                                              "ddpm-uncond-top-half", "imagenet")}
    named["dit"] = (dataclasses.replace(IMAGENET_DIT, name="dit"), None)
    found = {"ddpm-cond": named["ddpm-cond"]}
    assert list(generators_ahead(found, named, dataset)) == ["ddpm-uncond", "imagenet"]
    assert list(generators_ahead({}, named, dataset)) == ["ddpm-cond", "ddpm-uncond", "imagenet"]
    assert generators_ahead(found, {}, dataset) == {}
