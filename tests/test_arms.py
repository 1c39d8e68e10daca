"""Arms crossed with the grid, a baseline arm run once, and the primary analysis each sweep declares: plans
only (no Ray, no MLflow, nothing written). The tests of the sweeps' own arms need the control fields
(TrialConfig.augment_source, TrainConfig.budget) and skip without them."""

import dataclasses
import importlib.util
import json
import os
from pathlib import Path

import pytest

from synthaug.analysis.results import Declaration
from synthaug.config import TrainConfig, TrialConfig, to_flat, trial_values
from synthaug.sweep.declaration import tag_value
from synthaug.sweep.runner import Experiment, main
from synthaug.sweep.sweep_plan import parse_args, plan_sweep
from synthaug.training.trial import _run_name, trial_config, trial_key

ROOT = Path(__file__).resolve().parents[1]
CONTROLS = "augment_source" in {f.name for f in dataclasses.fields(TrialConfig)} and \
    "budget" in {f.name for f in dataclasses.fields(TrainConfig)}
needs_controls = pytest.mark.skipif(not CONTROLS, reason="needs the controls branch (TrialConfig.augment_source, "
                                                         "TrainConfig.budget)")

# long_tail's shape with arms of fields main already has
MECHANICS = Experiment(
    name="arms_mechanics",
    grid={"augment_classes": [["truck"], ["ship"], ["truck", "ship"]]},
    arms={"none": {"augment_classes": [], "augment_count": 0},
          "synthetic": {"generator": "ddpm-cond-subset"},
          "synthetic-full-split": {"generator": "ddpm-cond"},
          "stream": {"generator": "ddpm-uncond-subset", "augment_mode": "stream"}},
    fixed={"imbalance": 0.1, "generator": "ddpm-cond-subset", "augment_count": 10},
    primary=(("arm=synthetic,augment_classes=truck,ship", ""),
             ("arm=synthetic,augment_classes=truck,ship", "arm=synthetic-full-split,augment_classes=truck,ship")),
    exchange=(("arm=synthetic", "arm=synthetic-full-split"),))


def sweep_script(name: str) -> Experiment:
    spec = importlib.util.spec_from_file_location(name, ROOT / "sweeps" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EXPERIMENT


def plan(experiment, *argv):
    return plan_sweep(experiment, parse_args(experiment, list(argv)))[0]


def labels(plan_) -> list[str]:
    """Each configuration as the analysis labels it (its trials' params, key=value)."""
    return [",".join(f"{k}={'+'.join(v) if isinstance(v, list) else v}" for k, v in c.items()) for c in plan_.cells]


def test_arms_cross_the_grid_the_baseline_runs_once_and_an_arms_own_fields_win(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    made = plan(MECHANICS, "--seeds", "2")
    assert labels(made) == ["arm=none,augment_classes=", *(f"arm={a},augment_classes={c}" for a in
                            ("synthetic", "synthetic-full-split", "stream") for c in ("frame", "plus", "frame+plus"))]
    assert len(made.configs) == 10 * 2 and len({trial_key(c) for c in made.configs}) == 20       # no duplicate trial
    none = [c for c in made.configs if c.arm == "none"]
    assert [(c.seed, c.augment_classes, c.augment_count) for c in none] == [(0, (), 0), (1, (), 0)]
    stream = [c for c in made.configs if c.arm == "stream"]
    assert {(c.generator, c.augment_mode, c.augment_count) for c in stream} == {("ddpm-uncond-subset", "stream", 10)}
    assert made.grid == {"arm": ["none", "synthetic", "synthetic-full-split", "stream"],
                         "augment_classes": [["frame"], ["plus"], ["frame", "plus"]]}
    # Tune's params: a cell and a seed; the trial's config and its MLflow run read them as plan_sweep did (and as a
    # sweep made before seed-major order holds them, without "trial")
    params = {"trial": {"cell": made.cells[-1], "seed": 1}}
    assert trial_values(params) == trial_values(params["trial"]) == {
        "arm": "stream", "augment_classes": ["frame", "plus"], "seed": 1}
    assert trial_config(params, to_flat(made.base), made.arms) == made.configs[-1]
    assert _run_name(params) == "arm=stream augment_classes=frame+plus seed=1"
    # --grid arm=... keeps some arms; the crossing and the baseline stay as they were
    assert labels(plan(MECHANICS, "--grid", "arm=none,synthetic,synthetic-full-split")) == labels(made)[:7]
    assert os.listdir(tmp_path) == []


def test_tune_starts_every_configuration_of_a_seed_before_any_configurations_next_seed(tmp_path, monkeypatch):
    """The trials in the order Tune's default search algorithm makes (and its FIFO scheduler starts) them, Ray not
    started: seed-major, each of the plan's trials once."""
    from ray.tune.experiment import Experiment as TuneExperiment
    from ray.tune.search import BasicVariantGenerator

    from synthaug.sweep.runner import tune_param_space

    monkeypatch.chdir(tmp_path)
    made = plan(MECHANICS, "--seeds", "3")
    generator = BasicVariantGenerator()
    generator.add_configurations([TuneExperiment("order", lambda config: None, config=tune_param_space(made),
                                                 storage_path=str(tmp_path))])
    params = []
    while (trial := generator.next_trial()) is not None:
        params.append(trial.config)
    assert [trial_values(p)["seed"] for p in params] == [seed for seed in (0, 1, 2) for _ in made.cells]
    assert [{k: v for k, v in trial_values(p).items() if k != "seed"} for p in params[:len(made.cells)]] == \
        list(made.cells)
    made_keys = sorted(trial_key(trial_config(p, to_flat(made.base), made.arms)) for p in params)
    assert made_keys == sorted(trial_key(c) for c in made.configs)          # each trial once, none other


def test_a_run_once_cell_is_the_baseline_arm_whatever_its_other_values(tmp_path, monkeypatch):
    """sample_count's shape: K = 0 adds nothing, whatever the class set and arm: one configuration, the arm
    "none"; without that arm (--grid arm=...) one a remaining arm."""
    monkeypatch.chdir(tmp_path)
    counts = dataclasses.replace(MECHANICS, grid={"augment_classes": [["truck"], ["ship"]], "augment_count": [0, 2, 5]},
                                 run_once={"augment_count": 0}, primary=(), exchange=(), trend="augment_count",
                                 trend_within="arm=synthetic")
    made = plan(counts, "--seeds", "1")
    found = labels(made)
    assert found[0] == "arm=none,augment_classes=,augment_count=0" and len(found) == 1 + 3 * 2 * 2
    assert sum("augment_count=0" in label for label in found) == 1
    assert len({trial_key(c) for c in made.configs}) == len(made.configs)
    assert made.declared == {"primary": [], "trend": "augment_count", "trend_within": "arm=synthetic", "exchange": []}
    alone = labels(plan(counts, "--seeds", "1", "--grid", "arm=synthetic,stream"))
    assert [x for x in alone if "augment_count=0" in x] == ["arm=synthetic,augment_classes=,augment_count=0",
                                                              "arm=stream,augment_classes=,augment_count=0"]
    assert os.listdir(tmp_path) == []


def test_declarations_name_configurations_as_the_data_does_and_a_bad_one_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    made = plan(MECHANICS, "--seeds", "1")        # shapes: truck is frame, ship is plus
    assert made.declared == {
        "primary": [["arm=synthetic,augment_classes=frame,plus", ""],
                    ["arm=synthetic,augment_classes=frame,plus", "arm=synthetic-full-split,augment_classes=frame,plus"]],
        "trend": "", "trend_within": "", "exchange": [["arm=synthetic", "arm=synthetic-full-split"]]}
    assert json.loads(tag_value(made.declared)) == made.declared
    assert Declaration.from_tag(tag_value(made.declared)).primary[1] == tuple(made.declared["primary"][1])
    assert main(MECHANICS, ["--dry-run", "--seeds", "1"]) == 0
    out = capsys.readouterr().out
    assert "  none: augment_classes=none, augment_count=0; run once\n" in out
    assert "  arm=synthetic,augment_classes=frame,plus vs the baseline\n" in out
    assert "  exchange rate: arm=synthetic against arm=synthetic-full-split, each against the baseline" in out
    for declared, says in [
        ({"primary": (("arm=synthetic,generator=ddpm-cond", ""),)}, ("'arm=synthetic,generator=ddpm-cond' names "
         "'generator', not one of the sweep's configuration columns (arm, augment_classes)")),
        ({"trend": "augment_count"}, "trend: 'augment_count' is not one of the sweep's configuration columns"),
        ({"primary": (("arm", ""),)}, "primary: expected key=value[,key=value], got 'arm'"),
    ]:
        assert main(dataclasses.replace(MECHANICS, **declared), ["--dry-run"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: Experiment arms_mechanics ") and says in err[0], err
    # a text naming no configuration (a typo, or a --grid that removed it): the sweep runs, with one note a text,
    # and the analysis reports it as not tested
    for declared, says in [
        ({"primary": (("arm=synthetics", ""),)}, "no configuration of this sweep has 'arm=synthetics'"),
        ({"exchange": (("arm=synthetic", "augment_classes=truck,dog"),)}, ("no configuration of this sweep has "
         "'augment_classes=truck,dog'"))]:
        assert main(dataclasses.replace(MECHANICS, **declared), ["--dry-run"]) == 0
        notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
        assert len(notes) == 1 and says in notes[0], notes
    assert main(MECHANICS, ["--dry-run", "--grid", "augment_classes=truck"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 2 and notes[0] == (
        "note: Experiment arms_mechanics primary: no configuration of this sweep has "
        "'arm=synthetic,augment_classes=truck,ship' (a --grid removed it?); its arm in none, synthetic, "
        "synthetic-full-split, stream; augment_classes in frame; the analysis will report it as not tested"), notes
    assert os.listdir(tmp_path) == []


@needs_controls
def test_the_long_tail_sweeps_run_every_arm_their_baseline_once_and_declare_their_primary_analysis(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    long_tail = plan(sweep_script("long_tail"), "--seeds", "2")
    controls = ["synthetic", "synthetic-full-split", "equal-steps", "oversample", "reweight", "withheld-real"]
    assert len(long_tail.cells) == 19 and len(long_tail.configs) == 38
    assert labels(long_tail) == ["arm=none,augment_classes=", *(f"arm={a},augment_classes={c}" for a in controls
                                                                for c in ("frame", "plus", "frame+plus"))]
    assert len({trial_key(c) for c in long_tail.configs}) == 38
    by_arm = {c.arm: c for c in long_tail.configs}
    assert by_arm["synthetic"].generator == "ddpm-cond-subset" and by_arm["synthetic-full-split"].generator == "ddpm-cond"
    assert by_arm["equal-steps"].train.budget == "steps" and by_arm["synthetic"].train.budget == "epochs"
    assert {a: by_arm[a].augment_source for a in ("oversample", "reweight", "withheld-real")} == \
        {"oversample": "oversample", "reweight": "reweight", "withheld-real": "withheld"}
    assert long_tail.declared == {
        "primary": [["arm=synthetic,augment_classes=frame,plus", ""],
                    ["arm=synthetic,augment_classes=frame,plus", "arm=oversample,augment_classes=frame,plus"]],
        "trend": "", "trend_within": "", "exchange": [["arm=synthetic", "arm=withheld-real"]]}

    cond = plan(sweep_script("cond_vs_uncond"), "--seeds", "1")
    assert [c["arm"] for c in cond.cells] == ["none", "conditional", "conditional-full-split", "unconditional",
                                              "unconditional-targeted", "equal-steps", "oversample", "reweight",
                                              "withheld-real"]
    generators = {c.arm: c.generator for c in cond.configs}
    assert generators["conditional"] == "ddpm-cond-subset" and generators["unconditional"] == "ddpm-uncond-subset"
    assert cond.declared["primary"] == [["arm=conditional", "arm=unconditional"]]
    assert cond.declared["exchange"] == [["arm=conditional", "arm=withheld-real"]]

    counts = plan(sweep_script("sample_count"), "--seeds", "1")
    assert len(counts.cells) == 1 + 6 * 2 * 6 and labels(counts)[0] == "arm=none,augment_classes=,augment_count=0"
    assert sum(c["augment_count"] == 0 for c in counts.cells) == 1
    assert counts.declared == {"primary": [], "trend": "augment_count", "trend_within": "arm=synthetic",
                               "exchange": [["arm=synthetic", "arm=withheld-real"]]}
    paper = plan(sweep_script("sample_count"), "--preset", "paper", "--seeds", "1", "--dry-run")
    assert paper.grid["augment_count"] == [0, 100, 250, 500, 1000, 2000, 4000]

    replace = plan(sweep_script("replace_pct"), "--seeds", "1")
    assert replace.declared == {"primary": [["replace_pct=2", ""]], "trend": "replace_pct", "trend_within": "",
                                "exchange": []}
    assert os.listdir(tmp_path) == []
