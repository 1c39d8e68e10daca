"""Tests for synthaug.generation.image_metrics' pure functions on fixed inputs, and one tiny run of analysis/fidelity.py.

The CLI run trains the tiny preset's two DDPMs and its labeller in a temporary cache, samples
4 images a class from each, and writes the report (TORCH_HOME points at an empty folder, so
the classifier feature space is used whatever the machine has cached).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
from scipy import stats as st

from synthaug.generation.image_metrics import (border_luminance, brightness, class_agreement, confidence_histogram, fid,
                                               frechet_distance, kid, knn_radii, mmd2_unbiased, precision_recall,
                                               saturation, two_sample)

REPO = Path(__file__).resolve().parents[1]


def gaussian(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


def framed(inside: tuple[int, int, int], border: tuple[int, int, int], width: int = 4) -> np.ndarray:
    """One 32 x 32 image: a `border` frame `width` pixels wide around an `inside` centre."""
    image = np.empty((1, 32, 32, 3), np.uint8)
    image[:] = border
    image[:, width:-width, width:-width] = inside
    return image


# ---------------------------------------------------------------------------- image statistics


def test_dark_border_bright_centre():
    image = framed(inside=(255, 255, 255), border=(0, 0, 0))
    assert border_luminance(image) == pytest.approx([0.0])
    assert brightness(image) == pytest.approx([255 * 24 * 24 / 1024])        # 143.4375
    inverse = framed(inside=(0, 0, 0), border=(255, 255, 255), width=2)
    assert border_luminance(inverse, width=2) == pytest.approx([255.0])
    with pytest.raises(ValueError, match="width"):
        border_luminance(image, width=16)


def test_luminance_weights_and_saturation():
    red, grey = framed((255, 0, 0), (255, 0, 0)), framed((128, 128, 128), (128, 128, 128))
    assert brightness(red) == pytest.approx([0.299 * 255])
    assert saturation(red) == pytest.approx([1.0]) and saturation(grey) == pytest.approx([0.0])
    assert saturation(framed((200, 100, 100), (0, 0, 0))) == pytest.approx([0.5 * 576 / 1024])    # black: S = 0


def test_two_sample_tests_agree_with_scipy():
    a, b = gaussian(30, 1, 0).ravel(), gaussian(45, 1, 1, shift=0.4).ravel()
    test = two_sample(a, b)
    assert test.mean_diff == pytest.approx(a.mean() - b.mean())
    assert test.welch_p == pytest.approx(st.ttest_ind(a, b, equal_var=False).pvalue)
    assert test.welch_t == pytest.approx(st.ttest_ind(a, b, equal_var=False).statistic)
    assert test.mwu_p == pytest.approx(st.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    one = two_sample([1.0], b)
    assert np.isnan(one.welch_p) and np.isfinite(one.mwu_p) and np.isnan(two_sample([], b).mean_diff)


# ---------------------------------------------------------------------------- FID and KID


def test_fid_against_itself_and_a_shifted_copy():
    x = gaussian(500, 8, 0)
    shift = np.arange(8) / 4
    assert fid(x, x) == pytest.approx(0.0, abs=1e-8)
    assert fid(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-8)      # equal covariances


def test_frechet_distance_closed_forms():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)      # diagonal Gaussians
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected)
    a, b = gaussian(200, 5, 1), gaussian(200, 5, 2) @ np.diag([1, 2, 3, 1, 1])
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    reference = (np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1 + s2)
                 - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real)                  # pytorch-fid's formula
    assert fid(a, b) == pytest.approx(reference, rel=1e-6)


def test_kid_is_unbiased_near_zero_for_one_distribution():
    x, y = gaussian(300, 6, 3), gaussian(300, 6, 4)
    same, same_sd = kid(x, y, subsets=20, subset_size=200)
    shifted, _ = kid(x, y + 1.0, subsets=20, subset_size=200)
    assert abs(same) < 3 * same_sd + 0.02 and shifted > 20 * abs(same)
    a, b = gaussian(5, 3, 5), gaussian(4, 3, 6)
    k = lambda p, q: (p @ q / 3 + 1) ** 3                                                # noqa: E731
    brute = (sum(k(a[i], a[j]) for i in range(5) for j in range(5) if i != j) / 20
             + sum(k(b[i], b[j]) for i in range(4) for j in range(4) if i != j) / 12
             - 2 * sum(k(p, q) for p in a for q in b) / 20)
    assert mmd2_unbiased(a, b) == pytest.approx(brute)


def test_kid_has_no_sd_when_its_one_subset_is_both_whole_sets():
    x, y = gaussian(50, 4, 8), gaussian(50, 4, 9)
    value, sd = kid(x, y)                               # 50 of 50 a side: one subset possible
    assert value == pytest.approx(mmd2_unbiased(x, y)) and np.isnan(sd)
    value, sd = kid(x, gaussian(80, 4, 10))             # the larger set is subsampled: a real sd
    assert np.isfinite(value) and sd > 1e-6


def test_fid_and_kid_are_named_by_their_feature_space_in_the_csv_and_the_metrics(tmp_path):
    """... and the memorisation table, metrics and figure of a generator that copies its training images."""
    from synthaug.analysis.cas import REAL, Score, cas_table
    from synthaug.analysis.fidelity import FidelityResult, distances
    from synthaug.analysis.fidelity_report import (distance_table, fidelity_metrics, memorisation_table,
                                                   plot_closest_pairs, summary_lines)

    real, fake = gaussian(60, 4, 11), {"ddpm-cond": gaussian(60, 4, 12), "ddpm-uncond": gaussian(30, 4, 13)}
    table = distances(real, fake, key="labeller_features")
    assert list(table.columns[3:8]) == ["fid_labeller_features", "kid_labeller_features",
                                        "kid_sd_labeller_features", "kid_subset_size", "kid_subsets"]
    rows = table.set_index("generator")
    assert np.isnan(rows.loc["ddpm-cond", "kid_sd_labeller_features"]) and rows.loc["ddpm-cond", "kid_subsets"] == 1
    assert rows.loc["ddpm-uncond", "kid_sd_labeller_features"] > 0 and rows.loc["ddpm-uncond", "kid_subsets"] == 100
    empty = pd.DataFrame(columns=["a", "b", "statistic", "mean_diff"])
    from synthaug.analysis.memorisation import memorisation

    images = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), np.uint8)
    result = FidelityResult(
        preset="tiny", data="shapes", classes=("a",), samples_per_class=30, seed=0,
        feature_space="pseudo-labeller ResNet18 penultimate layer", feature_key="labeller_features",
        fid_label="FID (pseudo-labeller ResNet18 penultimate layer; not comparable with published FIDs)",
        labeller_test_acc=0.4, n_real=60, distances=table, statistics=empty, pooled=empty, values=empty,
        confidence=empty, agreement=empty,
        memorisation=memorisation({"ddpm-cond": images[:5]}, images[15:], images[:15]),     # a copier
        samples=(), real_images=np.zeros((0, 32, 32, 3), np.uint8),
        real_labels=np.zeros(0, np.int64), notes=(),
        cas=cas_table([Score("ddpm-cond", 0.5, np.array([0.5]), np.array([20]), np.array([10]))],
                      Score(REAL, 0.75, np.array([0.75]), np.array([20]), np.array([10])), ("a",)))
    metrics = fidelity_metrics(result)
    assert (metrics["cas.ddpm-cond"], metrics["cas.ddpm-cond.a"], metrics["cas_gap.ddpm-cond"],
            metrics["cas_real_reference"], metrics["cas_real_reference.a"]) == (0.5, 0.5, -0.25, 0.75, 0.75)
    assert {"fid_labeller_features.ddpm-cond", "kid_labeller_features.ddpm-uncond"} <= set(metrics)
    assert not [k for k in metrics if k.split(".")[0] in ("fid", "kid")]
    assert metrics["memorised_share.ddpm-cond"] == 1 and metrics["nearest_train_median.ddpm-cond"] == 0
    printed = "\n".join(summary_lines(result))
    assert "ddpm-cond: fid_labeller_features " in printed and "(one subset: all 60 of each; no sd)" in printed
    assert "nearest training image, ddpm-cond: median 0.000, min 0.000 (per-pixel RMS on [0, 1]); 5 of 5 " in printed
    assert "| ddpm-cond | 5 | 0.000 | 0.000 | 0.000 | 5 (100.0%) |" in memorisation_table(result.memorisation)
    plot_closest_pairs(result.memorisation).savefig(tmp_path / "closest_pairs.png")
    assert (tmp_path / "closest_pairs.png").stat().st_size > 1000
    assert "± " not in distance_table(result).split("ddpm-cond |")[1].split("\n")[0]


def test_a_generator_that_learns_from_a_trials_subset_is_left_out_of_a_standalone_fidelity_run():
    from synthaug.analysis.fidelity import usable_generators
    from synthaug.config import preset

    specs = [g for g in preset("smoke").generators if g.name in ("ddpm-cond", "ddpm-cond-subset")]
    usable, notes = usable_generators(specs, ("a", "b"))
    assert [g.name for g in usable] == ["ddpm-cond"]
    assert len(notes) == 1 and notes[0].startswith("ddpm-cond-subset left out: it learns from one trial's real subset")


# ---------------------------------------------------------------------------- precision and recall


def test_precision_recall_identical_disjoint_and_partial():
    x = gaussian(200, 4, 7)
    assert precision_recall(x, x.copy()) == (1.0, 1.0)
    assert precision_recall(x, x + 100.0) == (0.0, 0.0)
    line = np.arange(10.0)[:, None]
    assert knn_radii(line, k=1).tolist() == [1.0] * 10
    precision, recall = precision_recall(line, np.r_[line[:5], line[:5] + 50], k=1)     # half far away
    assert precision == 0.5 and recall == 0.6       # real 5 lies within 1 of fake 4


# ---------------------------------------------------------------------------- labeller diagnostics


def test_confidence_histogram_and_agreement():
    hist = confidence_histogram([0.05, 0.95, 0.99, 1.0, 0.5], bins=10)
    assert hist["count"].tolist() == [1, 0, 0, 0, 0, 1, 0, 0, 0, 3] and hist["fraction"].sum() == pytest.approx(1)
    table = class_agreement(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 2, 2]), ("a", "b", "c"))
    assert table["fraction"].tolist() == [1.0, 0.5, 1.0] and table["n"].tolist() == [1, 2, 2]


# ---------------------------------------------------------------------------- the CLI


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("fidelity_cli", REPO / "analysis" / "fidelity.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    for args, start in [(["--preset", "huge"], "error: --preset: one of"),
                        (["--samples-per-class", "1"], "error: --samples-per-class: "),
                        (["--cas-per-class", "-1"], "error: --cas-per-class: "),
                        (["--data", str(tmp_path / "missing")], "error: --data ")]:
        assert cli.main([*args, "--cache", str(tmp_path), "--no-log"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(start) and err.count("\n") == 1, err


def test_e5_takes_its_samples_a_class_from_the_preset_the_paper_one_at_the_studys_scale(tmp_path):
    """The study compared over 900 samples a class; the paper preset's 1,000 also make E5's FID an FID-10k."""
    spec = importlib.util.spec_from_file_location("fidelity_cli", REPO / "analysis" / "fidelity.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    chosen = {name: cli.settings_from(cli.parse_args(["--preset", name, "--cache", str(tmp_path)])).samples_per_class
              for name in ("paper", "smoke", "tiny")}
    assert chosen == {"paper": 1000, "smoke": 100, "tiny": 100}
    flagged = cli.parse_args(["--preset", "paper", "--samples-per-class", "7", "--cache", str(tmp_path)])
    assert cli.settings_from(flagged).samples_per_class == 7


def test_help_imports_no_torch_ray_or_mlflow():
    """--help (and every flag checked before the presets) answers without the heavy imports."""
    probe = ("import runpy, sys\nsys.argv = ['analysis/fidelity.py', '--help']\ntry:\n"
             "    runpy.run_path('analysis/fidelity.py', run_name='__main__')\nexcept SystemExit as stop:\n"
             "    print('exit', stop.code, sorted(m for m in ('torch', 'ray', 'mlflow') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "usage: analysis/fidelity.py" in done.stdout and done.stdout.strip().endswith("exit 0 []"), done.stdout


def test_tiny_cli_run_writes_the_report(tmp_path):
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db",
           "OMP_NUM_THREADS": "1"}     # as conftest's one_torch_thread: small models stall on 2 shared threads
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(REPO / "analysis" / "fidelity.py"), "--preset", "tiny", "--data",
                           "shapes", "--samples-per-class", "4", "--cas-per-class", "4", "--cache", str(tmp_path / "cache"), "--out", str(out),
                           "--no-log"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    # a line a step, naming the generator and the stage, with n/N where there is one
    for line in ("fidelity: generator 1/2, ddpm-uncond: trained (once", "fidelity: generator 2/2, ddpm-cond: trained",
                 "training generator ddpm-cond (", "fidelity: ddpm-cond: 4 samples a class from its pools",
                 "fidelity: scoring: ", "fidelity: memorisation: the nearest of "):
        assert line in done.stdout, (line, done.stdout[-3000:])
    assert re.search(r"^training generator ddpm-cond \(ddpm-cond-[0-9a-f]{16}, cpu\): 30/30 steps", done.stdout, re.M)
    assert re.search(r"^training the labeller of ddpm-uncond \([0-9a-f]{16}, \d+ images\): 2/2 epochs, .* epochs/s, ",
                     done.stdout, re.M)
    assert "\r" not in done.stdout + done.stderr and "\x1b[" not in done.stdout + done.stderr
    assert {"report.md", "distances.csv", "statistics.csv", "pooled.csv", "confidence.csv", "agreement.csv",
            "memorisation.csv", "cas.csv", "statistics.png", "samples.png", "confidence.png", "agreement.png",
            "closest_pairs.png"} <= {p.name for p in out.iterdir()}
    copies = pd.read_csv(out / "memorisation.csv")
    assert list(copies["source"]) == ["real test images", "ddpm-uncond", "ddpm-cond"] and copies.loc[2, "n"] == 40
    assert (copies["min"] >= 0).all() and "## Memorisation: distance to the nearest training image" in \
        (out / "report.md").read_text()
    assert "FID (pseudo-labeller ResNet18 penultimate layer; not comparable with published FIDs)" in \
        (out / "report.md").read_text()
    distances = pd.read_csv(out / "distances.csv").set_index("generator")
    assert list(distances.index) == ["ddpm-uncond", "ddpm-cond"] and distances.loc["ddpm-cond", "samples"] == 40
    assert distances[["fid_labeller_features", "precision", "recall"]].notna().all().all()
    assert "fid_labeller_features" in done.stdout
    pooled = pd.read_csv(out / "pooled.csv")
    assert {("ddpm-uncond", "ddpm-cond", "background")} <= set(zip(pooled["a"], pooled["b"], pooled["statistic"]))
    assert "background ddpm-uncond - ddpm-cond" in done.stdout and not (tmp_path / "m.db").exists()
    # CAS (synthaug.analysis.cas): the tiny recipe on each generator's pool images alone, 4 a class (--cas-per-class: the
    # samples already drawn, so the unconditional pool grows no further), beside the same recipe on 4 real images a
    # class, tested on the tiny preset's 200 test images
    cas = pd.read_csv(out / "cas.csv")
    overall = cas[cas["class"] == "all"].set_index("generator")
    assert list(overall.index) == ["real", "ddpm-uncond", "ddpm-cond"] and len(cas) == 3 * 11
    assert overall.loc["real", "train_images"] == 40 == overall.loc["ddpm-cond", "train_images"]
    assert overall["cas"].between(0, 1).all() and (overall["test_images"] == 200).all()
    assert (overall["gap"] == overall["cas"] - overall.loc["real", "cas"]).all()
    report = (out / "report.md").read_text()
    assert "## Classification accuracy score (CAS): trained on samples only, tested on real images" in report
    for name, labels in (("ddpm-uncond", "pseudo-labelled"), ("ddpm-cond", "conditioned")):
        assert re.search(rf"^\| {name} \| {labels} \| \d+ \| \d+\.\d% \| \d+\.\d% \| [+-]\d+\.\d \| ", report,
                         re.M), report
        assert re.search(rf"^  CAS {name}: \d+\.\d%, gap [+-]\d+\.\d pp \(circle ", done.stdout, re.M), done.stdout
