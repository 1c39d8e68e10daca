"""End to end on a real local Ray and a real SQLite MLflow store: a tiny sweep, its resume, its reuse of pools."""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats as scipy_stats

from synthaug.core.devices import DEVICE_ENV
from synthaug.core.gates import TRIAL_GATE
from synthaug.sweep.runner import Experiment, main
from synthaug.pools.__main__ import main as pools_main

from processes import kill_ray_instance, processes_of_ray_instance, short_ray_tmpdir, wait_for
from test_arms import needs_controls

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 2          # the tiny preset's
CLASSES = ("circle", "square", "triangle")
TINY = Experiment(name="tiny_replace", grid={"replace_pct": [0, 20]},
                  fixed={"generator": "ddpm-cond"})


def sweep_args(tmp_path, shapes_tar, *extra):
    return ["--preset", "tiny", "--seeds", "2", "--data", str(shapes_tar), "--cache", str(tmp_path / "cache"),
            "--storage", str(tmp_path / "ray_results"), "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
            *extra]


def runs(tmp_path, experiment, role):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], f"tags.`synthaug.role` = '{role}'")


def test_tiny_sweep_logs_every_trial_resumes_and_reuses_pools(tmp_path, shapes_tar, capsys):
    assert main(TINY, sweep_args(tmp_path, shapes_tar)) == 0
    out = capsys.readouterr().out
    client, trials = runs(tmp_path, "tiny_replace", "trial")
    _, sweeps = runs(tmp_path, "tiny_replace", "sweep")
    assert len(sweeps) == 1 and sweeps[0].info.status == "FINISHED"
    assert len(trials) == 4 and {r.info.status for r in trials} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {sweeps[0].info.run_id}
    assert sorted((r.data.params["replace_pct"], r.data.params["seed"]) for r in trials) == [
        ("0", "0"), ("0", "1"), ("20", "0"), ("20", "1")]
    generated = client.get_metric_history(sweeps[0].info.run_id, "pool_images_generated")
    assert generated[-1].value > 0
    # provenance on every run, trials (on Ray workers) and generators alike: the driver's code and the libraries
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True).stdout.strip())
    generator_runs = client.search_runs([client.get_experiment_by_name("generators").experiment_id])
    import torch
    for run in [*trials, *sweeps, *generator_runs]:
        assert run.data.tags["synthaug.git_commit"] == head and run.data.tags["synthaug.git_dirty"] == str(dirty).lower()
        assert run.data.tags["synthaug.version.torch"] == torch.__version__
        assert {"ray", "mlflow", "diffusers", "numpy", "python"} <= {k.rsplit(".", 1)[1] for k in run.data.tags
                                                                      if k.startswith("synthaug.version.")}
    digests = {r.data.tags["synthaug.data_digest"] for r in [*trials, *sweeps]}
    assert len(digests) == 1 and len(digests.pop()) == 64
    for run in trials:
        assert run.data.params["train.lr"] and run.data.params["data"] == str(shapes_tar)
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert [m.step for m in history] == list(range(1, EPOCHS + 1))
        # every epoch on the validation images; the test images once, after the last epoch
        for name in ("val_acc", "val_loss"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == list(range(1, EPOCHS + 1))
        for name in ("test_acc", "test_loss", *(f"test_{m}.{c}" for m in ("acc", "precision", "f1") for c in CLASSES)):
            assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [EPOCHS], name
        assert 0 <= run.data.metrics["test_acc"] <= 1 and 0 <= run.data.metrics["val_acc"] <= 1
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        per_class = pd.read_csv(client.download_artifacts(run.info.run_id, "per_class.csv", str(tmp_path)))
        assert list(per_class.columns) == ["class", "support", "recall", "precision", "f1"]
        assert list(per_class["class"]) == list(CLASSES) and list(per_class["support"]) == [20, 20, 20]
        for column, metric in (("recall", "test_acc"), ("precision", "test_precision"), ("f1", "test_f1")):
            np.testing.assert_allclose(per_class[column], [run.data.metrics[f"{metric}.{c}"] for c in CLASSES])
        expected = {"manifest.json", "confusion_matrix.csv", "confusion_matrix.png", "predictions.csv", "per_class.csv"}
        if run.data.params["replace_pct"] == "20":
            expected.add("synthetic_grid.png")
            manifest = json.loads(Path(client.download_artifacts(run.info.run_id, "manifest.json", str(tmp_path)))
                                  .read_text())
            assert [c["real"] for c in manifest["classes"]] == [16, 16, 16]     # round(20 * 0.8)
            assert [c["synthetic"] for c in manifest["classes"]] == [4, 4, 4]
            assert manifest["validation"]["per_class"] == 5                     # the tiny preset's
        assert expected <= artifacts
    assert "test accuracy (%) across seeds" in out and "mlflow ui --host 127.0.0.1 --backend-store-uri" in out
    # what the MLflow UI shows: a model-training experiment with a description, a saved view of the sweep's trials
    # grouped by configuration, and the result table on the parent run (metrics, artifacts, its description)
    experiment = client.get_experiment_by_name("tiny_replace")
    sweep = sweeps[0]
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "Each sweep is a parent run" in experiment.tags["mlflow.note.content"]
    name = sweep.data.tags["synthaug.sweep"]
    view = json.loads(json.loads(experiment.tags[f"mlflow.sharedViewState.{name}"])["state"])
    assert "metrics.`test_acc`" in view["selectedColumns"]
    assert view["groupBy"]["groupByKeys"] == [{"mode": "param", "groupByData": "replace_pct"}]
    assert f"#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning&viewStateShareKey=" in out
    assert sweep.info.run_name == f"{name.rsplit('-', 1)[1]} tiny: replace_pct=0,20; 2 seeds"
    assert sorted(r.info.run_name for r in trials) == ["replace_pct=0 seed=0", "replace_pct=0 seed=1",
                                                       "replace_pct=20 seed=0", "replace_pct=20 seed=1"]
    for pct in ("0", "20"):
        accuracies = [r.data.metrics["test_acc"] for r in trials if r.data.params["replace_pct"] == pct]
        metrics = {k.split(".", 1)[0]: v for k, v in sweep.data.metrics.items() if k.endswith(f".replace_pct_{pct}")}
        assert metrics["result/test_acc_fraction_mean"] == pytest.approx(np.mean(accuracies))
        assert metrics["result/test_acc_fraction_sd"] == pytest.approx(np.std(accuracies, ddof=1))
        assert metrics["result/seeds_finished"] == 2
        assert f"| {pct} | 2 | {100 * np.mean(accuracies):.2f} |" in sweep.data.tags["mlflow.note.content"]
    assert sweep.data.metrics["result/trials_finished"] == 4
    assert {"results/results.csv", "results/results.md"} <= {a.path for a in client.list_artifacts(sweep.info.run_id,
                                                                                                   "results")}
    table = pd.read_csv(client.download_artifacts(sweep.info.run_id, "results/results.csv", str(tmp_path)))
    assert list(table["replace_pct"]) == [0, 20] and list(table["seeds_finished"]) == [2, 2]
    # the console: a line when a trial starts and one when it finishes, a status line, no table, no box a trial
    starts = re.findall(r"^trial (\d+) started: replace_pct=(\d+), seed=(\d)$", out, re.MULTILINE)
    ends = re.findall(r"^trial (\d+) finished: replace_pct=(\d+), seed=(\d), test_acc \d+\.\d\d%$", out, re.MULTILINE)
    assert len(starts) == len(set(starts)) == 4 and sorted(ends) == sorted(starts), out
    assert re.search(r"^status \d+:\d\d:\d\d: 0 running, 0 pending, 4/4 finished; test_acc best \d+\.\d\d%, "
                     r"last \d+\.\d\d%$", out, re.MULTILINE), out
    assert "== Status ==" not in out and "+------" not in out and "Trial Status" not in out, out    # no Tune table
    assert "Configuration for experiment" not in out and "started with configuration" not in out, out
    assert "╭" not in out and "\x1b[" not in out, out                  # no box of a trial's config, no colour

    # The same command again: Tune restores the finished sweep; nothing is trained or generated twice.
    assert main(TINY, sweep_args(tmp_path, shapes_tar)) == 0
    assert "resuming" in capsys.readouterr().out
    _, trials_after = runs(tmp_path, "tiny_replace", "trial")
    assert sorted(r.info.run_id for r in trials_after) == sorted(r.info.run_id for r in trials)
    # Killed before Tune's first snapshot reached the storage: tuner.pkl alone (Tune itself would restore one trial
    # of an empty configuration). The same command starts the four trials again, each with its configuration;
    # each finds its finished MLflow run and reports it: no run added, no accuracy changed.
    (sweep_dir,) = (tmp_path / "ray_results").iterdir()
    snapshots = [*sweep_dir.glob("experiment_state-*.json"), *sweep_dir.glob("basic-variant-state-*.json")]
    assert len(snapshots) >= 2 and (sweep_dir / "tuner.pkl").exists()
    for path in snapshots:
        path.unlink()
    assert main(TINY, sweep_args(tmp_path, shapes_tar)) == 0
    out = capsys.readouterr().out
    assert "Tune's snapshot of its trials never reached the storage" in out, out
    ends = re.findall(r"^trial \d+ finished: replace_pct=(\d+), seed=(\d), test_acc (\d+\.\d\d)%$", out, re.MULTILINE)
    assert sorted(ends) == sorted((r.data.params["replace_pct"], r.data.params["seed"],
                                   f"{100 * r.data.metrics['test_acc']:.2f}") for r in trials), out
    _, trials_after = runs(tmp_path, "tiny_replace", "trial")
    assert sorted(r.info.run_id for r in trials_after) == sorted(r.info.run_id for r in trials)

    # Pools travel: exported from this cache and imported into a fresh one, they are read from disk by a fresh
    # sweep there: the DDPM generates nothing, no generator is trained, and each trial's test accuracy is the
    # one it had here.
    exported, moved = tmp_path / "pools.tar", tmp_path / "cache_b"
    pool_ids = sorted(p.name for p in (tmp_path / "cache" / "pools").iterdir())
    assert pools_main(["export", *pool_ids, "--to", str(exported), "--cache", str(tmp_path / "cache")]) == 0
    assert pools_main(["import", str(exported), "--cache", str(moved)]) == 0
    out = capsys.readouterr().out
    assert f"exported {len(pool_ids)} pool(s)" in out and "1 generator(s) and 1 labeller(s)" in out, out
    assert out.count(": imported into") == len(pool_ids) + 2, out     # the pools, the generator, its labeller
    imported = {p: p.stat().st_mtime_ns for p in [*(moved / "generators").iterdir(), *(moved / "labellers").iterdir()]}
    assert main(TINY, [*sweep_args(tmp_path, shapes_tar, "--fresh"), "--cache", str(moved)]) == 0
    assert "generated 0 images this sweep" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in imported} == imported        # nothing trained again
    assert len(list((moved / "labellers").glob("*/labeller.pt"))) == 1
    client, sweeps = runs(tmp_path, "tiny_replace", "sweep")
    newest = max(sweeps, key=lambda r: r.info.start_time)
    assert client.get_metric_history(newest.info.run_id, "pool_images_generated")[-1].value == 0
    _, trials_after = runs(tmp_path, "tiny_replace", "trial")
    assert len(trials_after) == 8

    def accuracies(parent):
        return {(r.data.params["replace_pct"], r.data.params["seed"]): r.data.metrics["test_acc"] for r in trials_after
                if r.data.tags["mlflow.parentRunId"] == parent}

    assert accuracies(newest.info.run_id) == accuracies(sweep.info.run_id) and len(accuracies(sweep.info.run_id)) == 4


@pytest.mark.parametrize("argv, field", [
    (["--seeds", "0"], "--seeds"),
    (["--preset", "huge"], "--preset"),
    (["--data", "/nonexistent/cifar.tar.gz"], "--data"),
])
def test_bad_input_is_one_line_exit_2_and_starts_nothing(tmp_path, argv, field):
    proc = subprocess.run([sys.executable, "sweeps/replace_pct.py", "--storage", str(tmp_path / "r"),
                           "--cache", str(tmp_path / "c"), "--mlflow-uri", f"sqlite:///{tmp_path / 'm.db'}", *argv],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0], proc.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "m.db").exists()


def test_a_trial_that_keeps_failing_ends_failed_with_its_error_and_a_rerun_retries_only_it(tmp_path, shapes_tar,
                                                                                           capsys, monkeypatch):
    from synthaug.sweep.sweep_plan import parse_args, plan_sweep
    from synthaug.training.trial import ERROR_TAG, trial_key

    argv = sweep_args(tmp_path, shapes_tar)
    plan, _ = plan_sweep(TINY, parse_args(TINY, argv))
    doomed = next(c for c in plan.configs if c.replace_pct == 20 and c.seed == 1)
    gate = tmp_path / "gate"
    gate.mkdir()
    for i in range(40):
        (gate / f"ticket-{i}").touch()
    (gate / f"fail-{trial_key(doomed)}").touch()          # every attempt of this trial raises
    monkeypatch.setenv(TRIAL_GATE, str(gate))
    assert main(TINY, argv) == 1                           # retried (max_failures), then failed: exit non-zero
    out = capsys.readouterr().out
    assert "failed: replace_pct=20, seed=1: " in out and "InjectedFault" in out and "3/4 trials finished" in out
    _, trials = runs(tmp_path, "tiny_replace", "trial")
    by_cell = {(r.data.params["replace_pct"], r.data.params["seed"]): r for r in trials}
    assert len(trials) == 4 and by_cell[("20", "1")].info.status == "FAILED"
    assert by_cell[("20", "1")].data.tags[ERROR_TAG].startswith("InjectedFault: trial ")
    assert {r.info.status for k, r in by_cell.items() if k != ("20", "1")} == {"FINISHED"}

    (gate / f"fail-{trial_key(doomed)}").unlink()          # the fault is gone: the same command finishes it
    assert main(TINY, argv) == 0
    client, after = runs(tmp_path, "tiny_replace", "trial")
    assert sorted(r.info.run_id for r in after) == sorted(r.info.run_id for r in trials)   # its own run, reopened
    assert {r.info.status for r in after} == {"FINISHED"}
    for run in after:                                      # the three that had finished did not train again
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == EPOCHS


KILLABLE = '''
import sys
from synthaug.sweep.runner import Experiment, main
sys.exit(main(Experiment(name="tiny_kill", grid={"replace_pct": [0, 20]}, fixed={"generator": "ddpm-cond"})))
'''


def test_two_sweeps_at_once_over_one_cache_and_one_store_both_finish_and_write_each_shard_once(tmp_path,
                                                                                              shapes_tar):
    """Two sweeps of the same pools (seeds 0,1 and 1,0: two sweeps, the same pools) into one experiment, at
    once; and a second copy of a sweep already running over that cache is refused in one line."""
    from filelock import FileLock

    from synthaug.sweep.sweep_plan import parse_args, plan_sweep

    script = tmp_path / "tiny_kill.py"
    script.write_text(KILLABLE)
    common = ["--preset", "tiny", "--data", str(shapes_tar), "--cache", str(tmp_path / "cache"),
              "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, str(script), *common, "--seeds", seeds, "--storage",
                               str(tmp_path / f"results{i}")], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for i, seeds in enumerate(("0,1", "1,0"))]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    for out in outs:        # a console redirected to a pipe, stdout and stderr together, as a log file gets it
        assert_a_plain_console(out, trials=4)
    generated = [int(o.split("DDPM server ddpm-cond: generated ")[1].split()[0]) for o in outs]
    on_disk = sum(len(np.load(p)["labels"]) for p in (tmp_path / "cache" / "pools").rglob("*.npz"))
    assert sum(generated) == on_disk > 0                       # every shard made by one of them, once
    assert not any("damaged" in o for o in outs)
    _, trials = runs(tmp_path, "tiny_kill", "trial")
    assert len(trials) == 8 and {r.info.status for r in trials} == {"FINISHED"}

    experiment = Experiment(name="tiny_kill", grid={"replace_pct": [0, 20]}, fixed={"generator": "ddpm-cond"})
    argv = [*common, "--seeds", "0,1", "--storage", str(tmp_path / "results0")]
    plan, _ = plan_sweep(experiment, parse_args(experiment, argv))
    with FileLock(str(tmp_path / "cache" / "sweeps" / f"{plan.name}.lock")):     # as if it were still running
        done = subprocess.run([sys.executable, str(script), *argv], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
    assert done.returncode == 1 and f"error: sweep {plan.name} is already running over the cache" in done.stderr


PERIODIC = re.compile(r"^(status \d+:\d\d:\d\d: |.*: \d+/\d+ [a-z]+(, |; |$))")   # status and progress lines


def assert_a_plain_console(out: str, trials: int) -> None:
    """No colour codes, carriage returns, Tune table or traceback; a line a trial start and end. The lines that
    are not periodic (status, progress: at most one every 20-30 s each) are bounded: a tiny sweep printed 20
    of them besides its trials' lines, measured (sweep header, Ray's start, cluster, MLflow's two, preparing,
    scoring, pools ready, server counts, the summary table, finished, Browse, Analyse); 40 leaves room for
    a warning or two, and the 16-line table Tune printed every 30 s would break it at once."""
    assert "\x1b[" not in out and "\r" not in out, out[-3000:]
    assert "== Status ==" not in out and "Trial Status" not in out and "+------" not in out, out[-3000:]
    assert "Traceback" not in out and "SystemExit" not in out, out[-5000:]
    assert len(re.findall(r"^trial \d+ (started|finished): ", out, re.MULTILINE)) == 2 * trials, out[-3000:]
    others = [line for line in out.splitlines() if not PERIODIC.match(line) and not line.startswith("trial ")]
    assert len(others) <= 40, "\n".join(others)


def finished_trials(tmp_path) -> int:
    if not (tmp_path / "mlflow.db").exists():
        return 0
    try:
        _, trials = runs(tmp_path, "tiny_kill", "trial")
    except Exception:           # the experiment is not created yet
        return 0
    return sum(r.info.status == "FINISHED" for r in trials)


def test_killed_sweep_resumes_and_finishes_only_what_is_left(tmp_path, shapes_tar):
    """Two tickets in the trial gate: exactly two trials can finish, the next one waits at the gate,
    and the kill lands then, however fast or busy the machine is. Two trials at a time on any machine (half its
    CPUs each): the trials start seed-major, each seed's pair compared with the baseline as it completes (the
    seed 0 pair before the kill, seeds 1 and 2 after the resume), on the console and on the parent run."""
    script = tmp_path / "tiny_kill.py"
    script.write_text(KILLABLE)
    gate = tmp_path / "gate"
    gate.mkdir()
    for i in range(2):
        (gate / f"ticket-{i}").touch()
    ray_tmpdir = short_ray_tmpdir()
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmpdir)}
    argv = [sys.executable, str(script), *sweep_args(tmp_path, shapes_tar, "--seeds", "3",
                                                      "--cpus-per-trial", f"{os.cpu_count() / 2:g}")]
    log = tmp_path / "first_run.log"
    try:
        with log.open("w") as out:
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**env, TRIAL_GATE: str(gate)})

        def blocked_at_gate() -> bool:
            taken = {p.name.removeprefix("taken-") for p in gate.glob("taken-*")}
            return any(p.name.removeprefix("waiting-") not in taken for p in gate.glob("waiting-*"))

        wait_for(lambda: finished_trials(tmp_path) == 2, "two finished trials", proc, log)
        wait_for(lambda: LIVE.search(log.read_text()), "the seed 0 pair's live comparison", proc, log)
        wait_for(blocked_at_gate, "a third trial at the gate", proc, log)
        assert processes_of_ray_instance(ray_tmpdir) - {proc.pid}, "the sweep's Ray daemons are not found"
        os.killpg(proc.pid, 9)          # the driver and its process group, without a chance to clean up
        proc.wait()
        kill_ray_instance(ray_tmpdir)   # Ray daemons that left the process group: this sweep's only
        _, before = runs(tmp_path, "tiny_kill", "trial")
        assert sum(r.info.status == "FINISHED" for r in before) == 2
        assert len(before) >= 3         # the trial at the gate had opened its run

        rerun = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
        (tmp_path / "rerun.log").write_text(rerun.stdout + rerun.stderr)     # beside first_run.log, for a reader
    finally:
        kill_ray_instance(ray_tmpdir)
        shutil.rmtree(ray_tmpdir, ignore_errors=True)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    _, after = runs(tmp_path, "tiny_kill", "trial")
    assert len(after) == 6 and {r.info.status for r in after} == {"FINISHED"}
    assert len({r.data.tags["synthaug.trial_key"] for r in after}) == 6
    assert len({(r.data.params["replace_pct"], r.data.params["seed"]) for r in after}) == 6
    finished_before = {r.info.run_id for r in before if r.info.status == "FINISHED"}
    assert finished_before <= {r.info.run_id for r in after}
    _, sweeps = runs(tmp_path, "tiny_kill", "sweep")
    assert len(sweeps) == 1
    # seed-major: every seed 0 trial opened its MLflow run before any seed 1 trial, and so on
    assert [r.data.params["seed"] for r in sorted(after, key=lambda r: r.info.start_time)] == list("001122")
    # a live line as each seed's pair completed, with the sweep's ETA until none is left: the seed 0 pair's before
    # the kill (and again after it when Tune's snapshot had missed that completion), then one as each further pair
    # completes after the resume, in whatever order the restored trials finish (the trial killed at the gate may
    # finish after a later seed's): each line counts the seeds whose two trials had finished by then
    first = [int(m["seeds"]) for m in LIVE.finditer(log.read_text())]
    resumed = list(LIVE.finditer(rerun.stdout))
    assert first == [1] and [int(m["seeds"]) for m in resumed if m["seeds"] != "1"] == [2, 3], rerun.stdout[-3000:]
    done_before = {(r.data.params["replace_pct"], r.data.params["seed"]) for r in before if r.info.status == "FINISHED"}
    for line in resumed:
        done = done_before | {(m[1], m[2]) for m in re.finditer(r"^trial \d+ finished: replace_pct=(0|20), seed=(\d), ",
                                                                 rerun.stdout[:line.start()], re.MULTILINE)}
        paired = {seed for pct, seed in done if (("20" if pct == "0" else "0"), seed) in done}
        assert len(paired) == int(line["seeds"]), rerun.stdout[-3000:]
        assert line["eta"].startswith("ETA ") == (line["finished"] != "6")
    # the parent run: the same figures, a step a paired seed, ending at all three seeds' paired t
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    by_pct = {pct: {int(r.data.params["seed"]): r.data.metrics["test_acc"] for r in after
                    if r.data.params["replace_pct"] == pct} for pct in ("0", "20")}
    diffs = [by_pct["20"][s] - by_pct["0"][s] for s in range(3)]
    history = {name: client.get_metric_history(sweeps[0].info.run_id, f"live.{name}.replace_pct_20")
               for name in ("diff_pp", "ci_low_pp", "ci_high_pp")}
    assert sorted({m.step for m in history["diff_pp"]}) == [1, 2, 3]
    assert max(history["diff_pp"], key=lambda m: m.step).value == pytest.approx(100 * np.mean(diffs))
    if np.ptp(diffs) > 1e-9:            # 60 test images: three equal differences have no interval
        low, high = scipy_stats.ttest_rel([by_pct["20"][s] for s in range(3)],
                                          [by_pct["0"][s] for s in range(3)]).confidence_interval(0.95)
        assert max(history["ci_low_pp"], key=lambda m: m.step).value == pytest.approx(100 * low)
        assert max(history["ci_high_pp"], key=lambda m: m.step).value == pytest.approx(100 * high)
    assert max(m.value for m in client.get_metric_history(sweeps[0].info.run_id, "live.trials_finished")) == 6
    printed_at = {int(m["finished"]) for m in LIVE.finditer(log.read_text() + "\n" + rerun.stdout)}   # trials finished
    assert {m.step for m in client.get_metric_history(sweeps[0].info.run_id, "live.eta_s")} >= printed_at >= {2, 6}


# the running comparison's line (synthaug.live_comparison), as the console prints it
LIVE = re.compile(r"^live replace_pct=20 vs replace_pct=0, (?P<seeds>\d) paired seeds? so far: [+-]\d+\.\d\d pp "
                  r"\((an interval from 2 paired seeds|95% t interval [+-]\d+\.\d\d to [+-]\d+\.\d\d|no interval: the "
                  r"differences do not vary)\); (?P<finished>\d)/6 trials finished, (?P<eta>ETA \d+:\d\d:\d\d "
                  r"\(\d+ s a trial, \d at a time\)|none left)$", re.MULTILINE)


ARMS = Experiment(
    name="tiny_arms", grid={},
    arms={"none": {"augment_classes": [], "augment_count": 0},
          "conditional": {"generator": "ddpm-cond"},
          "unconditional": {"generator": "ddpm-uncond", "augment_mode": "stream"}},
    fixed={"imbalance": 0.5, "augment_classes": ["square", "triangle"], "augment_count": 3},
    primary=(("arm=conditional", ""), ("arm=conditional", "arm=unconditional")))


def test_arms_set_several_fields_and_the_stream_arm_adds_the_same_total(tmp_path, shapes_tar):
    from synthaug.analysis.results import load_trials

    assert main(ARMS, sweep_args(tmp_path, shapes_tar, "--seeds", "1")) == 0
    client, trials = runs(tmp_path, "tiny_arms", "trial")
    assert len(trials) == 3 and {r.info.status for r in trials} == {"FINISHED"}
    by_arm = {r.data.params["arm"]: r for r in trials}
    assert by_arm["conditional"].data.params["generator"] == "ddpm-cond"
    assert by_arm["unconditional"].data.params["augment_mode"] == "stream"
    synthetic = {}
    for arm, run in by_arm.items():
        path = client.download_artifacts(run.info.run_id, "manifest.json", str(tmp_path / arm))
        manifest = json.loads(Path(path).read_text())
        synthetic[arm] = manifest["totals"]["synthetic"]
        if arm == "unconditional":
            assert manifest["stream"]["count"] == 6
            assert sum(c["stream"] for c in manifest["classes"]) == 6
    assert synthetic == {"none": 0, "conditional": 6, "unconditional": 6}
    assert sorted(r.info.run_name for r in trials) == ["arm=conditional seed=0", "arm=none seed=0",
                                                       "arm=unconditional seed=0"]
    loaded = load_trials(f"sqlite:///{tmp_path / 'mlflow.db'}", "tiny_arms")
    assert loaded.config_columns == ("arm",)        # generator, counts and mode are the arm's
    _, (parent,) = runs(tmp_path, "tiny_arms", "sweep")     # the declared primary analysis, before any trial ran
    assert json.loads(parent.data.tags["synthaug.primary"]) == {
        "primary": [["arm=conditional", ""], ["arm=conditional", "arm=unconditional"]], "trend": "",
        "trend_within": "", "exchange": []}


def test_a_stream_arm_on_a_conditional_generator_is_refused_before_anything_starts(tmp_path, shapes_tar, capsys):
    bad = Experiment(name="tiny_bad_arm", grid={},
                     arms={"stream": {"generator": "ddpm-cond", "augment_mode": "stream"}},
                     fixed={"augment_classes": ["square"], "augment_count": 3})
    assert main(bad, sweep_args(tmp_path, shapes_tar)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "augment_mode: stream needs an unconditional generator" in err[0]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


def sweep_script(name: str) -> Experiment:
    """The EXPERIMENT a script in sweeps/ declares."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "sweeps" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EXPERIMENT


@needs_controls                 # the long-tail sweeps' control arms
def test_every_sweep_script_runs_on_a_node_declaring_one_gpu(tmp_path, shapes_tar, cifar_named_tar, tiny_dit, capsys,
                                                             monkeypatch):
    """Each script's plan (preparation: a whole GPU; servers: a share each, split among a generator's
    instances; trials: a share each) on one GPU: nothing waits forever. The GPU is only declared: without
    SYNTHAUG_DEVICE=cpu a process given it stops (CUDA unusable), with it every process runs on the CPU.
    The grids are cut down (--grid, --set) to what the small data can give, so the scripts' declared primary
    analyses (which name configurations cut out) are left out; long_tail's synthetic arm learns a trial's real
    subset (ddpm-cond-subset, train_on trial): one instance a seed."""
    import ray
    from ray.cluster_utils import Cluster

    def undeclared(script: str) -> Experiment:
        return dataclasses.replace(sweep_script(script), primary=(), trend="", trend_within="", exchange=())

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    cluster.add_node(num_cpus=2, num_gpus=1)
    one_gpu = ("--seeds", "1", "--address", cluster.address, "--gpus", "1", "--wait-for-gpus", "0")
    cifar = ("--data", str(cifar_named_tar))
    try:
        # a GPU node without a driver CUDA can use: refused in one line once it joined, before anything trains
        assert main(undeclared("replace_pct"), sweep_args(tmp_path / "unusable", shapes_tar, *one_gpu,
                                                            "--grid", "replace_pct=0,12",
                                                            "--set", "generator=ddpm-cond")) == 2
        err = capsys.readouterr().err
        assert "error: GPU node " in err and "no NVIDIA driver answers there" in err and "SYNTHAUG_DEVICE=cpu" in err
        assert not (tmp_path / "unusable" / "cache" / "generators").exists()
        monkeypatch.setenv(DEVICE_ENV, "cpu")
        plans = {
            # the tiny unconditional DDPM cannot fill class pools (its labeller finds no class 1): the
            # unconditional path on one GPU is cond_vs_uncond's stream arm
            "replace_pct": ("--grid", "replace_pct=0,12", "--set", "generator=ddpm-cond"),
            "cond_vs_uncond": (*cifar, "--set", "augment_classes=ship+truck", "--grid", "arm=conditional,unconditional"),
            "long_tail": (*cifar, "--grid", "augment_classes=truck", "--grid", "arm=none,synthetic", "--seeds", "2"),
            "imagenet_targeted": (*cifar, "--grid", "augment_classes=truck", "--grid", "arm=none,synthetic",
                                  "--set", f"generators.imagenet.pretrained={tiny_dit}"),
            "sample_count": (*cifar, "--grid", "augment_classes=truck", "--grid", "augment_count=0,2",
                             "--grid", "arm=none,synthetic"),
        }
        assert set(plans) == {p.stem for p in (ROOT / "sweeps").glob("*.py")} - {"train_generators", "study"}  # every one
        for script, extra in plans.items():
            assert main(undeclared(script), sweep_args(tmp_path, shapes_tar, *one_gpu, *extra)) == 0, script
            _, trials = runs(tmp_path, script, "trial")
            assert len(trials) == (4 if script == "long_tail" else 2), script
            assert {r.info.status for r in trials} == {"FINISHED"}, script
        # long_tail: one generator a seed's real subset, each with its own weights, each trial served by its seed's
        client, trials = runs(tmp_path, "long_tail", "trial")
        _, (parent,) = runs(tmp_path, "long_tail", "sweep")
        weights = {k: v for k, v in parent.data.tags.items() if k.endswith(".weights")}
        assert sorted(weights) == [f"synthaug.generator.ddpm-cond-subset:seed{s}-lt0.1-n20-v5.weights" for s in (0, 1)]
        assert len(set(weights.values())) == 2
        served = {(r.data.params["seed"], r.data.params.get("generator_instance")) for r in trials
                  if r.data.params["augment_classes"]}
        assert served == {(str(s), f"ddpm-cond-subset:seed{s}-lt0.1-n20-v5") for s in (0, 1)}
        generators = client.get_experiment_by_name("generators")
        learned = [r.data.params for r in client.search_runs([generators.experiment_id],
                                                              "tags.`synthaug.role` = 'generator'")]
        subsets = sorted(int(p["train_images"]) for p in learned if p["generator"].startswith("ddpm-cond-subset:"))
        assert subsets == [20 + 6 + 2] * 2          # n_i = floor(20 * 0.1 ** (i / 2)) of the three classes
        # Without --address a sweep starts a Ray of its own, even with this cluster running beside it
        # (it once joined the cluster and crashed: "num_cpus ... must not be provided"); a sweep of one
        # configuration (no grid, no arms) ends with its one-row table (it once ended in a pandas error).
        local = Experiment(name="tiny_beside_a_cluster", grid={}, fixed={"generator": "ddpm-cond", "replace_pct": 20})
        assert main(local, sweep_args(tmp_path, shapes_tar, "--seeds", "1")) == 0
        assert re.search(r"^all +1 +\d+(\.\d+)? +-$", capsys.readouterr().out, re.MULTILINE)   # one seed: no sd
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_a_trial_tune_started_without_a_configuration_refuses_before_it_trains():
    """Tune's fallback when a restore fails inside it: one trial of an empty config (what CI met once, after a kill
    before Tune's first snapshot; tune_snapshot.py now keeps a sweep from that path). It must not train the base
    configuration under no seed."""
    from synthaug.training.trial import run_trial

    for params in ({}, {"trial": {"cell": {"replace_pct": 20}}}):
        with pytest.raises(ValueError, match="without a configuration .*--fresh"):
            run_trial(params, dataset=None, constants=None)


def test_the_status_line_counts_trials_and_estimates_what_is_left_from_finished_ones():
    """Tune's Trial objects as the reporter reads them: a status and the last result."""
    from types import SimpleNamespace as Trial

    from synthaug.sweep.console import status_line

    trials = [Trial(status="TERMINATED", last_result={"test_acc": 0.6, "time_total_s": 100.0, "timestamp": 9}),
              Trial(status="TERMINATED", last_result={"test_acc": 0.7, "time_total_s": 140.0, "timestamp": 5}),
              Trial(status="RUNNING", last_result={"time_total_s": 20.0}), Trial(status="RUNNING", last_result={}),
              Trial(status="PENDING", last_result=None), Trial(status="ERROR", last_result={})]
    # left: (120 - 20) + 120 running, 120 pending = 340 s, 2 at a time
    assert status_line(trials, 3725) == ("status 1:02:05: 2 running, 1 pending, 2/6 finished, 1 errored; test_acc best "
                                         "70.00%, last 60.00%; ETA 0:02:50 (120 s a trial, 2 at a time)")
    assert status_line(trials[4:5], 5) == "status 0:00:05: 0 running, 1 pending, 0/1 finished; ETA once a trial has finished"
    assert status_line(trials[:2], 300).endswith("2/2 finished; test_acc best 70.00%, last 60.00%")


def test_the_result_table_keeps_numbers_in_numeric_order_and_writes_tuples_as_the_grid_flag_does():
    from types import SimpleNamespace

    from synthaug.sweep.sweep_runs import result_table

    plan = SimpleNamespace(grid={"replace_pct": [0, 2, 10]})
    rows = [{"replace_pct": p, "seed": s, "done": True, "test_acc": 0.9 + p / 1000 + s / 100}
            for p in (10, 2, 0) for s in (0, 1)]
    table = result_table(plan, rows)
    assert list(table.index) == [0, 2, 10]                      # not "0", "10", "2"
    assert list(table["seeds"]) == [2, 2, 2] and table.loc[10, "mean"] == pytest.approx(0.915)
    plan = SimpleNamespace(grid={"augment_classes": [(), ("truck", "ship")]})
    rows = [{"augment_classes": c, "done": True, "test_acc": 0.5} for c in ([], ["truck", "ship"])]
    assert list(result_table(plan, rows).index) == ["none", "truck+ship"]
