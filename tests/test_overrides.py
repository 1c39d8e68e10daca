"""--set, --grid and --dry-run: typed values, unknown keys refused at every entry point, a plan that writes nothing;
and what a generator learns from (train_on)."""

import dataclasses
import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import pytest

from synthaug.config import ConfigError, TrialConfig, from_flat, preset, to_flat
from synthaug.data.instances import instance_name, instances, restricted, training_index
from synthaug.data.mixing import real_index
from synthaug.data.sources import data_outline, load_dataset, long_tail_counts
from synthaug.sweep.overrides import apply_grids, apply_sets
from synthaug.sweep.runner import Experiment, main
from test_arms import needs_controls

ROOT = Path(__file__).resolve().parents[1]
ARMS = Experiment(name="arms", grid={}, arms={"none": {"augment_count": 0}, "conditional": {"generator": "ddpm-cond"}},
                  fixed={"augment_classes": ["circle"], "augment_count": 4})


def sweep_script(name: str) -> Experiment:
    spec = importlib.util.spec_from_file_location(name, ROOT / "sweeps" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EXPERIMENT


def test_set_keeps_each_fields_type_at_every_level():
    experiment = sweep_script("replace_pct")
    changed, chosen = apply_sets(experiment, preset("paper"), [
        "train.epochs=1", "imbalance=0.5", "augment_classes=truck+ship", "replace_pct=4", "preset.gpus_per_trial=0.25",
        "preset.gpus=none", "preset.checkpointing.every_steps=50", "generators.ddpm-cond.train_on=trial",
        "generators.ddpm-cond.ddpm.block_out_channels=16+32", "generators.ddpm-uncond.sampler.steps=none"])
    assert changed.fixed["train.epochs"] == 1 and isinstance(changed.fixed["train.epochs"], int)
    assert "train.epochs" not in changed.paper_fixed             # the command line wins over paper_fixed
    assert changed.fixed["augment_classes"] == ("truck", "ship") and changed.grid["replace_pct"] == [4.0]
    assert chosen.gpus_per_trial == 0.25 and chosen.gpus is None and chosen.checkpointing.every_steps == 50
    cond, uncond = chosen.generator("ddpm-cond"), chosen.generator("ddpm-uncond")
    assert cond.train_on == "trial" and cond.ddpm.block_out_channels == (16, 32) and uncond.sampler.steps is None
    assert preset("paper").generator("ddpm-cond").train_on == "all"          # presets stay as written


@pytest.mark.parametrize("flag, text, says", [
    ("set", "train.epoch=1", "unknown key 'train.epoch' (did you mean train.epochs?)"),
    ("set", "train.epochs=1.5", "--set train.epochs: an integer, got '1.5'"),
    ("set", "train.epochs", "--set: key=value"),
    ("set", "preset.name=x", "unknown key 'preset.name'"),
    ("set", "preset.gpus_per_trail=1", "did you mean preset.gpus_per_trial?"),
    ("set", "generators.nope.train_on=all", "generators.<name>.<field> with <name> one of"),
    ("set", "generators.ddpm-cond.ddpm.attention=yes", "ddpm.attention: true or false, got 'yes'"),
    ("set", "generator=ddpm-cond", "the arms conditional set it"),
    ("grid", "seed=1,2", "unknown key 'seed'"),
    ("grid", "replace_pcts=1,2", "did you mean replace_pct?"),
    ("grid", "arm=none,unconditional", "--grid arm: names from none, conditional"),
    ("grid", "replace_pct=2,2", "distinct values"),
])
def test_bad_overrides_are_one_line_errors(flag, text, says):
    with pytest.raises(ConfigError) as err:
        if flag == "set":
            apply_sets(ARMS, preset("smoke"), [text])
        else:
            apply_grids(ARMS, [text])
    assert says in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("field", ["grid", "fixed", "paper_fixed", "arms"])
def test_an_experiments_own_unknown_key_is_refused_before_anything_starts(tmp_path, capsys, monkeypatch, field):
    monkeypatch.chdir(tmp_path)
    typo = {"imbalanse": [0.1]} if field == "grid" else {"imbalanse": 0.1}
    fields = {"grid": {}, **({"arms": {"a": typo}} if field == "arms" else {field: typo})}
    experiment = Experiment(name="typo", **fields)
    assert main(experiment, ["--preset", "tiny", "--seeds", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key 'imbalanse' (did you mean imbalance?)" in err[0] and field.rstrip("s") in err[0]
    assert os.listdir(tmp_path) == []


def test_from_flat_refuses_a_key_it_does_not_know():
    flat = to_flat(TrialConfig())
    assert from_flat(TrialConfig, flat) == TrialConfig()
    with pytest.raises(ConfigError, match="train.epoch: not a TrialConfig field"):
        from_flat(TrialConfig, {**flat, "train.epoch": 3})


@needs_controls                 # the long-tail sweeps' control arms
def test_paper_dry_run_prints_42_trials_and_the_plan_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    replace_pct = sweep_script("replace_pct")
    assert main(replace_pct, ["--preset", "paper", "--seeds", "6", "--dry-run", "--gpus", "32"]) == 0
    out = capsys.readouterr().out
    assert "42 trials = 7 configurations x 6 seeds; 2100 trial-epochs" in out
    assert "ddpm-uncond: ddpm, train 100000 steps at batch 128" in out and "128 trials at once" in out
    assert "GPU-h" in out and "the throughputs of NVIDIA H100" in out      # BENCHMARKS.md's row, assumed or measured
    # power at the declared effects with 6 seeds, from the paper preset's planned paired sd, or a pilot's
    assert "paired sd 0.38 pp (the review's paper regime, sqrt(2) x 0.27 pp; not yet measured by this project)" in out
    assert re.search(r"effect +power \(6 seeds\) +seeds for 80%\n +\+0\.3 pp +0\.\d\d +\d+\n +\+0\.5 pp", out), out
    # every paper sweep prices its trials on their stem (study: torchvision's), trials a GPU, checkpoints, the source
    for name in ("replace_pct", "long_tail", "cond_vs_uncond", "sample_count"):
        assert main(sweep_script(name), ["--preset", "paper", "--dry-run", "--gpus", "8", "--gpu-model", "H200"]) == 0
        out = capsys.readouterr().out
        assert re.search(r"trials: imagenet stem 24,107 training images/s one trial alone, 220,660 test images/s; "
                         r"4 trial\(s\) a GPU at 0.22 GPU each, 4.31x one alone", out), out
        assert re.search(r"checkpoints: 42.7 MiB a trial, every 120 s and at the last epoch \(\d+ in all, [0-9.]+ GiB", out)
        assert "the throughputs of NVIDIA H200 (full), measured by bench/on_device.sh" in out, out
    assert main(replace_pct, ["--preset", "paper", "--seeds", "6", "--dry-run", "--set", "train.epochs=1",
                              "--paired-sd", "0.0005"]) == 0
    out = capsys.readouterr().out
    assert "42 trials = 7 configurations x 6 seeds; 42 trial-epochs" in out
    assert re.search(r"paired sd 0.05 pp \(a pilot's \(--paired-sd\)\):\n.*\n +\+0\.3 pp +1\.00 +[2-6]\n", out)
    assert os.listdir(tmp_path) == []           # no cache, no mlflow.db, no ray_results, no download


def test_a_dry_run_outline_matches_the_decoded_data(tmp_path, shapes_tar):
    outline = data_outline(str(shapes_tar), tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    loaded = load_dataset(str(shapes_tar), tmp_path / "cache")
    assert outline.classes == loaded.classes and outline.digest == loaded.digest
    assert np.array_equal(np.bincount(outline.train_y), np.bincount(loaded.train_y))
    assert np.array_equal(np.bincount(outline.test_y), np.bincount(loaded.test_y))


def test_a_subset_generator_learns_from_exactly_the_trials_real_images(tmp_path):
    dataset = load_dataset("shapes", tmp_path)
    cfg = TrialConfig(seed=3, imbalance=0.1, real_per_class=100, generator="ddpm-cond", augment_classes=("circle",),
                      augment_count=5, replace_pct=10)
    index = real_index(cfg, dataset)
    assert np.array_equal(np.bincount(dataset.train_y[index]), long_tail_counts(100, 0.1, 10))
    # the classifier's real images (replacement keeps a prefix of these) are all inside the subset
    from synthaug.data.mixing import compose
    from synthaug.pools.store import PoolSlice

    def take(c, n):
        return PoolSlice("p", np.arange(n), np.zeros((n, 32, 32, 3), np.uint8), np.full(n, c), np.ones(n, np.float32))
    training = compose(cfg, dataset, take)
    real_images = {x.tobytes() for x in training.x[~training.synthetic]}
    assert real_images <= {x.tobytes() for x in dataset.train_x[index]}

    chosen = dataclasses.replace(preset("smoke"), generators=tuple(
        dataclasses.replace(g, train_on="trial") if g.name == "ddpm-cond" else g for g in preset("smoke").generators))
    configs = [dataclasses.replace(cfg, seed=s) for s in (0, 1)] + [dataclasses.replace(cfg, generator="ddpm-uncond")]
    found = instances(chosen, configs)
    assert list(found) == ["ddpm-cond:seed0-lt0.1-n100", "ddpm-cond:seed1-lt0.1-n100", "ddpm-uncond"]
    assert instance_name(configs[1], {"ddpm-cond": "subset"}) == "ddpm-cond:seed1-lt0.1-n100"
    assert instance_name(configs[1], {"ddpm-cond": "seed"}) == "ddpm-cond:train-seed1"
    assert instance_name(configs[1], {}) == "ddpm-cond"
    digests = [restricted(dataset, training_index(sub, dataset)).digest for _, sub in found.values()]
    assert len(set(digests)) == 3 and digests[2] == dataset.digest                # 'all': the whole split
    assert restricted(dataset, training_index(configs[0], dataset)).digest == digests[0]   # the same cut, the same key
    with pytest.raises(ConfigError, match="generator.train_on: 'all' for a generator not trained here"):
        dataclasses.replace(preset("tiny").generator("imagenet"), train_on="trial").validate()


def test_recipe_is_a_sweep_axis_and_its_fields_are_not_set_behind_its_back(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    replace_pct = sweep_script("replace_pct")
    assert main(replace_pct, ["--preset", "paper", "--seeds", "2", "--dry-run", "--grid", "recipe=study,strong"]) == 0
    out = capsys.readouterr().out
    assert "28 trials = 14 configurations x 2 seeds" in out and "study" in out and "strong" in out
    assert main(replace_pct, ["--preset", "paper", "--dry-run", "--set", "train.momentum=0.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: train.momentum: set by recipe study; add --set recipe=custom to choose it yourself"]
    assert main(replace_pct, ["--preset", "paper", "--dry-run", "--set", "recipe=custom",
                              "--set", "train.momentum=0.5"]) == 0
    assert main(replace_pct, ["--preset", "paper", "--dry-run", "--set", "recipe=fancy"]) == 2
    assert "recipe: one of study, strong, custom, got 'fancy'" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_a_generator_a_seed_puts_the_generators_variance_in_the_intervals_at_a_cost_the_dry_run_states(
        tmp_path, capsys, monkeypatch):
    chosen = dataclasses.replace(preset("smoke"), generators=tuple(
        dataclasses.replace(g, seed_per_trial=True) if g.name == "ddpm-cond" else g for g in preset("smoke").generators))
    configs = [TrialConfig(seed=s, generator="ddpm-cond", augment_classes=("circle",), augment_count=5) for s in (0, 4)]
    found = instances(chosen, configs)
    assert list(found) == ["ddpm-cond:train-seed0", "ddpm-cond:train-seed4"]
    assert [spec.train_seed for spec, _ in found.values()] == [0, 4]
    assert [subset for _, subset in found.values()] == [None, None]             # each learns from the whole split
    monkeypatch.chdir(tmp_path)
    on_cond = ["--preset", "paper", "--seeds", "3", "--dry-run", "--set", "generator=ddpm-cond"]
    replace_pct = sweep_script("replace_pct")
    assert main(replace_pct, on_cond) == 0
    assert capsys.readouterr().out.count("train 100000 steps") == 1
    assert main(replace_pct, [*on_cond, "--set", "generators.ddpm-cond.seed_per_trial=true"]) == 0
    out = capsys.readouterr().out
    assert out.count("train 100000 steps") == 3 and "ddpm-cond:train-seed2: ddpm" in out
    assert os.listdir(tmp_path) == []


@needs_controls
def test_sweeps_target_classes_by_name_and_a_mismatched_data_set_is_refused(tmp_path, cifar_named_tar, capsys,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    long_tail, cond_vs_uncond = sweep_script("long_tail"), sweep_script("cond_vs_uncond")
    assert main(long_tail, ["--dry-run"]) == 0                      # shapes: CIFAR-10's names by the explicit alias
    out = capsys.readouterr().out
    assert all(re.search(rf"^synthetic +{c} ", out, re.M) for c in ("frame", "plus", "frame\\+plus")), out
    cifar3 = ["--preset", "tiny", "--data", str(cifar_named_tar), "--dry-run"]
    assert main(long_tail, cifar3) == 0                             # the data's own names
    assert re.search(r"^synthetic +truck\+ship ", capsys.readouterr().out, re.M)
    assert main(cond_vs_uncond, cifar3) == 2                        # this data set has no dog
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: augment_classes: 'dog' is not a class of cifar3 (cat, ship, truck); name one of them, or map it "
        "with --class-map dog=<class>"]
    # n_max 10, not the tiny 20: its withheld-real arm takes K = 10 cats from outside the subset and the validation split
    assert main(cond_vs_uncond, [*cifar3, "--class-map", "dog=cat", "--set", "real_per_class=10"]) == 0
    assert main(cond_vs_uncond, [*cifar3, "--class-map", "dog=wolf"]) == 2
    assert "--class-map: NAME=CLASS pairs with CLASS one of cat, ship, truck; got 'dog=wolf'" in capsys.readouterr().err
    by_index = Experiment(name="by_index", grid={}, fixed={"augment_classes": [9], "augment_count": 3})
    assert main(by_index, cifar3) == 2
    assert "augment_classes: class names like truck or ship, not indices; got 9" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_a_dry_run_on_cpus_prints_the_cpu_rows_estimate_and_the_paper_preset_without_a_gpu_stops_first(
        tmp_path, capsys, monkeypatch):
    """No GPU (the smoke preset, or --gpus 0): the estimate divides by the CPU row of the preset's size, named by
    --gpu-model or found in BENCHMARKS.md; twice the row's training images/s, half the trials' minutes."""
    from synthaug.training.benchmarks import cpu_row, write_throughput

    monkeypatch.chdir(tmp_path)
    replace_pct = sweep_script("replace_pct")
    measured = cpu_row("smoke")
    assert measured is not None and measured.device.startswith("cpu") and not measured.assumed
    assert main(replace_pct, ["--dry-run", "--seeds", "2"]) == 0
    assert re.search(rf"estimate on this machine's \d+ CPUs \(the throughputs of {re.escape(measured.device)} \(smoke\), "
                     r"measured by bench/gpu_suite.py --size smoke", capsys.readouterr().out)

    def trial_minutes(cifar_images: float) -> float:
        benchmarks = tmp_path / f"b{cifar_images:g}.md"
        write_throughput(benchmarks, dataclasses.replace(measured, device="cpu (test, 2 cores)", cifar_images=cifar_images))
        assert main(replace_pct, ["--dry-run", "--seeds", "2", "--gpus", "0", "--gpu-model", "cpu (test",
                                  "--benchmarks", str(benchmarks)]) == 0
        out = capsys.readouterr().out
        assert "on GPUs (" not in out                   # a CPU row prices CPUs only
        found = re.search(r"estimate on this machine's \d+ CPUs \(the throughputs of cpu \(test, 2 cores\) \(smoke\).*"
                          r"trials (\d+) min \(\d+ at once.*; about \d+ min in all, the first trial's result after "
                          r"about \d+ min", out)
        assert found, out
        return float(found.group(1))

    slow, fast = trial_minutes(100), trial_minutes(200)
    assert fast < slow and abs(fast * 2 - slow) <= 0.2 * slow + 2      # minutes are rounded; evaluation does not scale
    assert main(replace_pct, ["--preset", "paper", "--dry-run", "--gpus", "0"]) == 0
    assert "estimate on CPUs: none, no CPU row of the paper preset's size" in capsys.readouterr().out
    for f in list(tmp_path.iterdir()):
        f.unlink()
    import torch

    if torch.cuda.device_count() == 0:          # the paper preset asks for a GPU: one line before data or Ray
        assert main(replace_pct, ["--preset", "paper", "--data", "shapes", "--cache", str(tmp_path / "c")]) == 2
        assert capsys.readouterr().err.strip() == (
            "error: --gpus: the paper preset asks for 1 GPU(s) and this machine has 0 (a local Ray, no --address); "
            "pass --gpus 0 to run on its CPUs instead, or --address for a cluster's GPUs")
        assert os.listdir(tmp_path) == []       # nothing decoded, no store, no Ray results


@needs_controls
def test_sample_count_runs_its_k0_baseline_once_and_names_its_own_analysis(tmp_path, capsys, monkeypatch):
    """K = 0 adds nothing whatever the class set and arm: one configuration, the arm none (73, not 84); every
    other cell is crossed with the arms. An empty tuple is 'none' in every output and on the command line."""
    from synthaug.sweep.overrides import grid_value, parse_value
    from synthaug.sweep.sweep_plan import Experiment as Declared

    monkeypatch.chdir(tmp_path)
    sample_count = sweep_script("sample_count")
    assert sample_count.analysis == "analysis/sample_count.py" and Declared("x", {}).analysis == \
        "analysis/significance.py"
    assert main(sample_count, ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "219 trials = 73 configurations x 3 seeds" in out
    rows = [line.split()[:3] for line in out.splitlines()
            if line.split()[:1] and line.split()[0] in sample_count.arms and len(line.split()) > 3]
    assert rows[0] == ["none", "none", "0"] and sum(r[2] == "0" for r in rows) == 1 and len(rows) == 73
    assert ["synthetic", "frame", "2"] in rows and ["withheld-real", "plus", "100"] in rows
    assert main(sample_count, ["--dry-run", "--grid", "augment_count=2,5"]) == 0     # no K = 0: the full cross
    assert "75 trials = 25 configurations x 3 seeds" in capsys.readouterr().out
    assert grid_value(()) == "none" and grid_value(("truck", "ship")) == "truck+ship"
    assert parse_value("augment_classes", "none", tuple[str, ...], "--grid") == () == \
        parse_value("augment_classes", "", tuple[str, ...], "--grid")
    assert os.listdir(tmp_path) == []
