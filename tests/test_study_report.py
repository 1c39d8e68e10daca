"""Tests for synthaug.study.claims (the verdict rule, on planted numbers: seconds) and analysis/study_report.py end to
end: two tiny sweeps on shapes with CIFAR-10's names (long_tail: the baseline, synthetic and oversample arms on
{truck, ship}; replace_pct: p in 0, 2, 4), 2 seeds each, a planted fidelity run, then the report from --sweep and
from a study run, and report.html read back from a headless chromium's DOM (every claim row, every figure decoded
with a non-zero size). The end-to-end test took 549 s and 647 s on 2 CPU cores shared with other
sweeps and tests (load 10-12), most of it the two sweeps.
"""

from __future__ import annotations

import json
import math
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

from synthaug.analysis.primary import ALPHA, POWER
from synthaug.analysis.results import load_trials
from synthaug.stats.inference import power_table
from synthaug.study import claims
from synthaug.study.claims import (CONTRADICTED, FALLS, INCONCLUSIVE, MIXED, NO_CLEAR_INCREASE, NOT_RUN, REPRODUCED,
                                   RISES, STUDY, background_row, detectable, mixed_verdict, verdict)
from synthaug.study.study_inputs import Fidelity, InputError, SweepRef, parse_sweep, parse_sweeps_tag

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- the verdict rule


def test_a_directional_claim_is_reproduced_contradicted_or_inconclusive_by_its_adjusted_p_and_sign():
    assert verdict(RISES, 0.010, 0.004, 0.016, 0.01) == REPRODUCED
    assert verdict(RISES, -0.010, -0.016, -0.004, 0.01) == CONTRADICTED
    assert verdict(FALLS, -0.010, -0.016, -0.004, 0.01) == REPRODUCED
    assert verdict(RISES, 0.010, -0.010, 0.030, 0.30) == INCONCLUSIVE
    assert verdict(RISES, 0.010, 0.004, 0.016, ALPHA) == INCONCLUSIVE        # at alpha: not below it
    assert verdict(RISES, math.nan, math.nan, math.nan, math.nan) == INCONCLUSIVE


def test_no_clear_increase_is_contradicted_by_an_increase_and_reproduced_by_a_narrow_interval_below_the_margin():
    assert verdict(NO_CLEAR_INCREASE, 0.020, 0.010, 0.030, 0.001) == CONTRADICTED
    assert verdict(NO_CLEAR_INCREASE, 0.001, -0.002, 0.004, 0.40) == REPRODUCED       # below +0.5 pp
    assert verdict(NO_CLEAR_INCREASE, 0.001, -0.020, 0.022, 0.40) == INCONCLUSIVE      # too wide to say
    assert verdict(NO_CLEAR_INCREASE, -0.020, -0.030, -0.010, 0.001) == REPRODUCED     # a decrease is no increase


def test_a_row_without_a_p_decides_by_its_interval_and_mixed_impact_by_counts():
    assert verdict(RISES, 0.6, 0.2, 1.1, math.nan) == REPRODUCED          # an exchange rate, Fieller's interval
    assert verdict(RISES, 0.6, -math.inf, math.inf, math.nan) == INCONCLUSIVE
    assert verdict(RISES, -0.6, -1.0, -0.2, math.nan) == CONTRADICTED
    assert mixed_verdict(up=2, down=1, tested=20) == REPRODUCED
    assert mixed_verdict(up=0, down=3, tested=3) == CONTRADICTED
    assert mixed_verdict(up=1, down=0, tested=20) == INCONCLUSIVE


def test_the_smallest_detectable_effect_is_where_power_table_first_reaches_80_percent():
    from scipy import stats as st

    n, sd, family = 8, 0.004, 2
    half = sd / math.sqrt(n) * st.t.ppf(0.975, n - 1)      # the 95% interval's half-width
    found = detectable(-half, half, n, family)
    at, below = power_table(sd, n, family, (found, found * 0.98), ALPHA, POWER)
    assert at.power == pytest.approx(POWER, abs=1e-6) and below.power < POWER - 0.01
    assert 0.004 < found < 0.007           # about 1.3 sd at 8 seeds and alpha / 2
    assert math.isnan(detectable(0.0, 0.01, 1, 1))


def test_darker_backgrounds_are_found_from_the_per_image_values_and_equal_ones_are_not():
    rng = np.random.default_rng(0)
    values = pd.DataFrame({"source": np.repeat(["ddpm-uncond", "ddpm-cond", "real"], 300),
                           "background": np.r_[rng.normal(80, 20, 300), rng.normal(100, 20, 300),
                                               rng.normal(100, 20, 300)]})
    row = background_row(Fidelity("r", values, {}))
    assert row.verdict == REPRODUCED and -25 < row.estimate < -15 and row.ci_high < 0
    same = values.assign(background=rng.normal(100, 20, 900))
    assert background_row(Fidelity("r", same, {})).verdict == INCONCLUSIVE


def test_inputs_name_experiments_and_a_bad_one_is_one_line():
    assert parse_sweep("long_tail:long_tail-tiny-1") == ("E1+E2", SweepRef("long_tail", "long_tail-tiny-1"))
    assert parse_sweep("replace_pct")[1].sweep is None
    refs, fidelity = parse_sweeps_tag(json.dumps({"E4": {"experiment": "replace_pct", "sweep": "s"},
                                                  "E5": {"run_id": "abc"}}))
    assert refs["E4"].sweep == "s" and fidelity == "abc"
    with pytest.raises(InputError, match=r"^--sweep: experiment:sweep with experiment one of long_tail"):
        parse_sweep("longtail:x")
    with pytest.raises(InputError, match=r"^tag synthaug.study.sweeps: JSON"):
        parse_sweeps_tag("[1]")


def test_every_study_claim_gets_a_row_and_an_empty_input_makes_them_all_not_run():
    rows = claims.evaluate({}, None)
    assert [r.claim.key for r in rows] == [c.key for c in STUDY]
    assert {r.verdict for r in rows} == {NOT_RUN}
    assert {c.direction for c in STUDY} <= {RISES, FALLS, NO_CLEAR_INCREASE, MIXED}


# ---------------------------------------------------------------------------- end to end


def _sweep(script: str, *args: str, cwd: Path, data: Path, uri: str) -> None:
    argv = [sys.executable, str(REPO / "sweeps" / f"{script}.py"), "--preset", "tiny", "--seeds", "2", "--data",
            str(data), "--mlflow-uri", uri, "--storage", str(cwd / "ray_results"), "--cache", str(cwd / "cache"),
            *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=1200, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _fidelity_run(uri: str, folder: Path) -> str:
    """A planted fidelity run: unconditional samples 20 luma darker than conditional ones, and a CAS metric."""
    from synthaug.core.tracking import ANALYSIS, ROLE, ensure_experiment, log_folder_run

    rng = np.random.default_rng(1)
    folder.mkdir()
    pd.DataFrame({"source": np.repeat(["ddpm-uncond", "ddpm-cond", "real"], 200), "class": "truck",
                  "background": np.r_[rng.normal(80, 15, 200), rng.normal(100, 15, 400)]}).to_csv(
        folder / "image_values.csv", index=False)
    return log_folder_run(uri, ensure_experiment(uri, "fidelity"), "fidelity tiny", {ROLE: "analysis",
                          ANALYSIS: "fidelity"}, {}, {"cas.ddpm-cond": 0.41, "background_diff.ddpm-uncond": -20.0},
                          folder)


def _rendered(page: Path) -> str:
    """The page's DOM after chromium loaded it, each image's decoded size written into it by a probe script."""
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if browser is None:
        pytest.skip("no chromium on this machine")
    probe = page.with_name("probed.html")
    probe.write_text(page.read_text().replace("</body>", "<script>window.addEventListener('load', () => {for (const "
                     "i of document.images) i.dataset.natural = i.naturalWidth + 'x' + i.naturalHeight;});</script>"
                     "</body>"))
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                           "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_report_of_two_tiny_sweeps_has_every_claim_and_its_page_shows_every_row_and_figure(
        cifar_named_tar, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _sweep("long_tail", "--grid", "arm=none,synthetic,oversample", "--grid", "augment_classes=truck+ship",
           cwd=tmp_path, data=cifar_named_tar, uri=uri)
    _sweep("replace_pct", "--set", "generator=ddpm-cond", "--grid", "replace_pct=0,2,4", cwd=tmp_path,
           data=cifar_named_tar, uri=uri)
    fidelity = _fidelity_run(uri, tmp_path / "fidelity")

    out = tmp_path / "report"
    done = subprocess.run([sys.executable, str(REPO / "analysis" / "study_report.py"), "--sweep", "long_tail",
                           "--sweep", "replace_pct", "--fidelity-run", fidelity, "--mlflow-uri", uri, "--out",
                           str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = pd.read_csv(out / "claims.csv")
    assert list(table["claim"]) == [c.key for c in STUDY]
    assert set(table["verdict"]) <= {REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_RUN}
    by = table.set_index("claim")
    for ran in ("E2 truck+ship", "E2 vs oversample", "E4 2% replacement", "E4 trend"):
        assert by.at[ran, "verdict"] != NOT_RUN and np.isfinite(by.at[ran, "estimate"]), ran
    assert by.at["E3 conditional vs unconditional", "verdict"] == NOT_RUN          # no E3 sweep given
    assert by.at["E5 darker backgrounds", "verdict"] == REPRODUCED
    markdown = (out / "report.md").read_text()
    assert "| ddpm-cond | 41.0% |" in markdown and "Deviations from the study" in markdown and "recipe=strong" in markdown
    assert re.search(r"\| generator kind and source \|[^\n]*\| E4 \| ddpm-cond: ddpm", markdown)   # the sweep's run tags
    analysis = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("study-analysis")
                                              .experiment_id])
    assert {a.path for a in MlflowClient(uri).list_artifacts(analysis[0].info.run_id)} >= {"report.md", "report.html"}

    dom = _rendered(out / "report.html")
    rows = re.findall(r"<tr class=\"claim [a-z-]+\" data-claim=\"([^\"]+)\"", dom)
    assert rows == [c.key for c in STUDY]
    sizes = re.findall(r"<img [^>]*data-natural=\"(\d+)x(\d+)\"", dom)
    assert len(sizes) == 2 == dom.count("<img ") and all(int(w) > 0 and int(h) > 0 for w, h in sizes)
    assert "data:image/png;base64," in (out / "report.html").read_text() and "src=\"http" not in dom

    # a study run naming the same sweeps: the newest one is read, and the report becomes its artifacts
    client = MlflowClient(uri)
    sweeps = {key: {"experiment": name, "sweep": load_trials(uri, name).sweep}
              for key, name in (("E1+E2", "long_tail"), ("E4", "replace_pct"))}
    from synthaug.core.tracking import ensure_experiment

    study = client.create_run(ensure_experiment(uri, "study"), tags={"synthaug.study": "tiny",
                              "synthaug.study.sweeps": json.dumps({**sweeps, "E5": {"run_id": fidelity}})})
    assert _script().main(["--mlflow-uri", uri, "--out", str(tmp_path / "study")]) == 0
    logged = {a.path for a in client.list_artifacts(study.info.run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/claims.csv"} <= logged


def _script():
    from importlib import util

    spec = util.spec_from_file_location("study_report_script", REPO / "analysis" / "study_report.py")
    script = util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    from synthaug.core.tracking import ensure_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    script = _script()
    assert script.main(["--mlflow-uri", uri, "--no-log"]) == 2
    assert capsys.readouterr().err == f"error: --mlflow-uri: no MLflow store at {tmp_path / 'mlflow.db'}\n"
    ensure_store(uri)
    capsys.readouterr()
    for args, start in [(["--sweep", "longtail:x"], "error: --sweep: experiment:sweep with experiment one of"),
                        ([], "error: --study: no study run (experiment 'study', tag synthaug.study)"),
                        (["--sweep", "long_tail"], "error: --experiment: no experiment 'long_tail'")]:
        assert script.main([*args, "--mlflow-uri", uri, "--no-log"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(start) and err.count("\n") == 1, (args, err)
    with pytest.raises(SystemExit) as stopped:
        script.main(["--study", "a", "--sweep", "long_tail"])
    assert stopped.value.code == 2 and capsys.readouterr().err == "error: --study: give a study run or --sweep, not both\n"


def test_a_study_sweep_that_never_started_a_trial_is_not_run_but_naming_it_yourself_is_bad_input(tmp_path, capsys):
    """A study stopped in E3's pool warm-up: its study run names a sweep with a parent run and no trials. The
    report still comes out, every E3 claim "not run" with why; the same sweep given with --sweep is exit 2."""
    from synthaug.core.tracking import ROLE, SWEEP, ensure_store
    from synthaug.study.study_inputs import STUDY_EXPERIMENT, STUDY_TAG, SWEEPS_TAG

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_store(uri)
    client = MlflowClient(uri)
    sweep = "cond_vs_uncond-smoke-4c3ce548"
    parent = client.create_run(client.create_experiment("cond_vs_uncond"), tags={ROLE: "sweep", SWEEP: sweep})
    client.set_terminated(parent.info.run_id, "FAILED")
    study = client.create_run(client.create_experiment(STUDY_EXPERIMENT), tags={
        STUDY_TAG: "study-smoke-1", SWEEPS_TAG: json.dumps({"E3": {"experiment": "cond_vs_uncond", "sweep": sweep}})})
    script = _script()
    out = tmp_path / "report"
    assert script.main(["--study", study.info.run_id, "--mlflow-uri", uri, "--no-log", "--out", str(out)]) == 0
    table = pd.read_csv(out / "claims.csv")
    e3 = table[table["claim"].str.startswith("E3 ")]
    assert len(e3) == 1 and (e3["verdict"] == NOT_RUN).all()
    assert f"sweep {sweep} of study run {study.info.run_id} has no trial runs" in e3["note"].iloc[0]
    assert f"E3: not run: sweep {sweep}" in (out / "report.md").read_text()
    capsys.readouterr()
    assert script.main(["--sweep", f"cond_vs_uncond:{sweep}", "--mlflow-uri", uri, "--no-log"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --sweep: no trial runs for sweep {sweep!r}") and err.count("\n") == 1


def test_each_generator_is_named_once_with_its_kind_and_source_from_the_sweep_runs_tags():
    from synthaug.study.study_report import served_kinds

    tags = {"synthaug.generator.ddpm-cond-subset:seed0-lt0.1-n20-v5.kind": "ddpm",
            "synthaug.generator.ddpm-cond-subset:seed1-lt0.1-n20-v5.kind": "ddpm",
            "synthaug.generator.imagenet.kind": "pretrained-dit", "synthaug.generator.imagenet.source": "DiT-XL/2",
            "synthaug.generator.imagenet.weights": "abc"}
    assert served_kinds(tags) == {"ddpm-cond-subset": "ddpm", "imagenet": "pretrained-dit (DiT-XL/2)"}


def test_a_deviation_names_the_guidance_scale_only_beside_the_pipeline_that_reads_it():
    from synthaug.study.study_report import described

    stand_in = {"generator_spec.train_data": "shapes-fine", "generator_spec.guidance_scale": "1.5",
                "generator_spec.label_map": "shapes-fine"}
    assert described(stand_in) == "train_data=shapes-fine; label_map=shapes-fine"
    dit = {"generator_spec.pretrained": "facebook/DiT-XL-2-256", "generator_spec.guidance_scale": "1.5"}
    assert described(dit) == "pretrained=facebook/DiT-XL-2-256; guidance_scale=1.5"
