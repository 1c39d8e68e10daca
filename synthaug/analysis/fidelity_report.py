"""What people look at from an E5 run (synthaug.analysis.fidelity): its figures, its Markdown report and
CSVs in a folder, and the `analysis` run that holds them in MLflow."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from synthaug.analysis.cas import OVERALL, REAL
from synthaug.analysis.fidelity import EXPERIMENT, STATISTICS, FidelityResult, distance_columns
from synthaug.analysis.memorisation import DISTANCE, REFERENCE, REFERENCE_PERCENTILE, Memorisation
from synthaug.analysis.sample_grids import SampleGrid, plot_sample_grids
from synthaug.core.report import format_p, markdown_table
from synthaug.core.tracking import ANALYSIS, ROLE, ensure_experiment, log_folder_run
from synthaug.generation.image_metrics import BORDER, KNN_K


# ---------------------------------------------------------------------------- figures


def plot_statistics(values: pd.DataFrame, classes: Sequence[str]) -> Figure:
    """A panel a statistic: per class, a box for the real images and one a generator."""
    sources = ["real", *[s for s in values["source"].unique() if s != "real"]]
    colours = matplotlib.colormaps["tab10"]
    width = 0.8 / len(sources)
    fig = Figure(figsize=(2 + 0.22 * len(classes) * len(sources), 2.6 * len(STATISTICS)))
    axes = fig.subplots(len(STATISTICS), 1, sharex=True)
    for ax, statistic in zip(np.atleast_1d(axes), STATISTICS):
        for i, source in enumerate(sources):
            mine = values[values["source"] == source]
            data = [mine.loc[mine["class"] == c, statistic].to_numpy() for c in classes]
            positions = np.arange(len(classes)) - 0.4 + width * (i + 0.5)
            keep = [j for j, d in enumerate(data) if len(d)]
            if not keep:
                continue
            parts = ax.boxplot([data[j] for j in keep], positions=positions[keep], widths=width * 0.85,
                               patch_artist=True, showfliers=False, manage_ticks=False)
            for box in parts["boxes"]:
                box.set(facecolor=colours(i % 10), alpha=0.7)
            ax.plot([], [], color=colours(i % 10), lw=6, alpha=0.7, label=source)
        ax.set_ylabel(statistic + (" (0-1)" if statistic == "saturation" else " (luma 0-255)"), fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    first, last = np.atleast_1d(axes)[0], np.atleast_1d(axes)[-1]
    first.legend(fontsize=7, ncol=len(sources), loc="best")
    last.set_xticks(range(len(classes)), list(classes), rotation=30, ha="right")
    first.set_title(f"samples vs real test images per class (background = {BORDER}-pixel border)")
    fig.tight_layout()
    return fig


def plot_confidence(confidence: pd.DataFrame) -> Figure:
    """The pseudo-labeller's max-probability histogram on each unconditional stream."""
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    generators = list(dict.fromkeys(confidence["generator"]))
    width = 0.1 / max(1, len(generators))
    for i, name in enumerate(generators):
        part = confidence[confidence["generator"] == name]
        ax.bar(part["bin_low"].to_numpy(float) + width * (i + 0.5), part["fraction"], width=width * 0.95, label=name)
    ax.set_xlim(0, 1)
    ax.set_xlabel("labeller confidence (max probability)")
    ax.set_ylabel("share of samples")
    ax.legend(fontsize=7)
    ax.set_title("pseudo-labeller confidence on unconditional samples")
    return fig


def plot_agreement(agreement: pd.DataFrame, classes: Sequence[str]) -> Figure:
    """Per class, the share of a conditional generator's class-c samples the labeller labels c."""
    fig = Figure(figsize=(2 + 0.5 * len(classes), 3.2))
    ax = fig.subplots()
    generators = list(dict.fromkeys(agreement["generator"]))
    width = 0.8 / max(1, len(generators))
    for i, name in enumerate(generators):
        part = agreement[agreement["generator"] == name].set_index("class").reindex(classes)
        ax.bar(np.arange(len(classes)) - 0.4 + width * (i + 0.5), part["fraction"].astype(float), width=width,
               label=name)
    ax.set_xticks(range(len(classes)), list(classes), rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("labelled as the class asked for")
    ax.legend(fontsize=7)
    ax.set_title("labeller agreement with the conditioning class")
    return fig


def sample_grids_figure(result: FidelityResult) -> Figure:
    """Real test images beside each generator's samples, a row a class (synthaug.analysis.figures' layout)."""
    grids = [SampleGrid("real", True, result.real_images, result.real_labels, result.seed, caption="test split")]
    return plot_sample_grids([*grids, *result.samples], result.classes)      # a generator's samples are a grid


def plot_closest_pairs(found: Memorisation) -> Figure:
    """A generator a pair of rows: its samples nearest to a training image (top, closest first) and those
    training images (below), each pair titled with its distance."""
    columns = max([len(p.distances) for p in found.pairs] + [1])
    fig = Figure(figsize=(1.1 * columns + 1.2, 2.4 * max(1, len(found.pairs))))
    for row, pairs in enumerate(found.pairs):
        for col in range(len(pairs.distances)):
            for offset, images, label in ((0, pairs.samples, pairs.generator), (1, pairs.training, "nearest train")):
                ax = fig.add_subplot(2 * len(found.pairs), columns, (2 * row + offset) * columns + col + 1)
                ax.imshow(images[col], interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if offset == 0:
                    ax.set_title(f"{pairs.distances[col]:.3f}", fontsize=7)
                if col == 0:
                    ax.set_ylabel(label, fontsize=7)
    fig.suptitle(f"closest sample / training pairs ({DISTANCE}); flagged below {found.threshold:.3f}", fontsize=8)
    return fig


# ---------------------------------------------------------------------------- report, files, MLflow


def markdown_report(result: FidelityResult, figures: Sequence[str] = ()) -> str:
    """report.md: settings, distances, pooled and per-class statistics, labeller, notes, figures."""
    parts = [
        f"# Fidelity (E5): preset {result.preset}, data {result.data}", "",
        f"- generators: {', '.join(s.name for s in result.samples)}",
        f"- samples: {result.samples_per_class} a class a generator (pool seed {result.seed}); "
        f"real reference: the test split ({result.n_real} images)",
        f"- feature extractor: {result.feature_space}",
        f"- pseudo-labeller test accuracy: {result.labeller_test_acc:.1%}", "",
        "## Distribution distances", "", distance_table(result), "",
        "## Classification accuracy score (CAS): trained on samples only, tested on real images", "",
        cas_text(result), "", cas_overview(result), "", cas_per_class(result), "",
        "## Image statistics, all classes pooled", "", headline(result), "", pooled_table(result), "",
        "## Image statistics per class (sample vs real of the same class)", "", per_class_table(result), "",
        "## Pseudo-labeller", "", labeller_section(result), "",
        "## Memorisation: distance to the nearest training image", "", memorisation_text(result.memorisation), "",
        memorisation_table(result.memorisation), "",
        "## Notes", "", "\n".join(f"- {n}" for n in result.notes) or "none", "",
    ]
    if figures:
        parts += ["## Figures", "", *[f"![{Path(f).stem}]({f})" for f in figures], ""]
    parts += ["## How to read this", "", HOW_TO_READ.format(border=BORDER, k=KNN_K), ""]
    return "\n".join(parts)


HOW_TO_READ = (
    "Brightness is the mean luminance of an image (BT.601 luma, 0-255), background the mean luminance of its "
    "{border}-pixel border (a proxy: CIFAR objects are mostly centred), saturation the mean HSV S (0-1). 'diff' is "
    "sample minus real (or a minus b); Welch's t and Mann-Whitney U are two-sided, and per-class q is "
    "Benjamini-Hochberg over the whole per-class table. With thousands of images tiny differences are "
    "'significant': read the size of diff. FID and KID are lower for closer distributions (KID is unbiased, so it "
    "can be slightly negative); both depend on the feature space, so their names say which (fid_inception, "
    "fid_labeller_features), and FID is biased upward for small sample sizes. KID's ± is the sd over random subsets "
    "of the sets (only the larger one varies when the smaller is whole); where both sets fit in one subset there is "
    "one value and no sd. "
    "Precision (k={k}) is the share of samples inside the real images' k-NN manifold (quality), recall the share of "
    "real images inside the samples' manifold (coverage). Unconditional samples are assigned to classes by the "
    "pseudo-labeller, so their per-class rows mix generator and labeller errors. CAS (Ravuri & Vinyals 2019) is "
    "the test accuracy of a classifier trained on a generator's samples alone; the gap to the real-data reference "
    "(the same recipe, seed and count of real images) is what the samples lack as training data, whatever FID "
    "says. Per class, a class's CAS is the share of its test images that classifier gets right (its recall).")


def cas_text(result: FidelityResult) -> str:
    """How the CAS classifiers were trained, and the reference's accuracy."""
    if result.cas.empty:
        return "not measured"
    real = _cas_row(result, REAL, OVERALL)
    return (f"Each generator's pool images (pool seed {result.seed}: the class conditioned on, or for an unconditional "
            f"generator the pseudo-labeller's class, as trials take them) train the preset's classifier alone, "
            f"{result.cas_setup}; it is tested on {real['test_images']} real test images. The real-data reference is "
            f"the same recipe and seed trained on as many real training images a class (a balanced real-only "
            f"trial's; {real['train_images']} in all), trained once for this run: {_pct(real['cas'])}. "
            f"Gap: CAS - reference, in percentage points (cas.csv).")


def cas_overview(result: FidelityResult) -> str:
    """A row a generator: its CAS and gap beside its FID, KID and labeller agreement."""
    if result.cas.empty:
        return ""
    fid_name, kid_name, _ = distance_columns(result.feature_key)
    distances = result.distances.set_index("generator")
    rows = []
    for s in result.samples:
        row = _cas_row(result, s.name, OVERALL)
        far = distances.loc[s.name] if s.name in distances.index else None
        rows.append([s.name, "conditioned" if s.conditional else "pseudo-labelled", row["train_images"],
                     _pct(row["cas"]), _pct(row["real_acc"]), _pp(row["gap"]),
                     "-" if far is None else _fmt(far[fid_name]), "-" if far is None else f"{far[kid_name]:.4g}",
                     _agreement(result, s.name) if s.conditional else "-"])
    return markdown_table(["generator", "labels", "train images", "CAS", "real-data accuracy", "gap (pp)",
                           fid_name, kid_name, "labeller agreement"], rows)


def cas_per_class(result: FidelityResult) -> str:
    """A row a class: the reference's accuracy, then each generator's CAS with its gap."""
    if result.cas.empty:
        return ""
    generators = [s.name for s in result.samples]
    rows = [[name, _pct(_cas_row(result, REAL, name)["cas"]),
             *[f"{_pct(r['cas'])} ({_pp(r['gap'])})" for r in (_cas_row(result, g, name) for g in generators)]]
            for name in result.classes]
    return markdown_table(["class", "real-data accuracy", *[f"{g} CAS (gap pp)" for g in generators]], rows)


def _cas_row(result: FidelityResult, source: str, cls: str) -> dict:
    table = result.cas
    return table[(table["generator"] == source) & (table["class"] == cls)].iloc[0].to_dict()


def _agreement(result: FidelityResult, generator: str) -> str:
    part = result.agreement[result.agreement["generator"] == generator]
    total = part["n"].sum()
    return _pct(part["agree"].sum() / total) if total else "-"


def _pct(x: float) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.1%}"


def _pp(x: float) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{100 * x:+.1f}"


def memorisation_text(found: Memorisation) -> str:
    share = f"{REFERENCE_PERCENTILE:g}%"
    return (f"Each image's {DISTANCE} distance to its nearest image of the training split the generators learned "
            f"from (0: an exact copy). The reference is the {REFERENCE} (real images no generator saw); a sample is "
            f"flagged when it is closer to a training image than the reference's p{REFERENCE_PERCENTILE:g} "
            f"({_fmt(found.threshold)}: {share} of the reference lies closer), so the reference flags about {share} "
            f"by construction and a generator that copies flags far more (closest_pairs.png shows its closest "
            f"pairs).")


def memorisation_table(found: Memorisation) -> str:
    rows = [[r.source, r.n, _fmt(r.median), _fmt(r.p1), _fmt(r.min), f"{r.flagged} ({r.flagged_share:.1%})"
             if np.isfinite(r.flagged_share) else "-"] for r in found.table.itertuples()]
    return markdown_table(["source", "images", "median", f"p{REFERENCE_PERCENTILE:g}", "min",
                           f"flagged (< reference p{REFERENCE_PERCENTILE:g})"], rows)


def distance_table(result: FidelityResult) -> str:
    fid_name, _, _ = distance_columns(result.feature_key)
    rows = [[r["generator"], r["samples"], r["real"], _fmt(r[fid_name]), kid_text(result, r), _fmt(r["precision"]),
             _fmt(r["recall"])] for r in result.distances.to_dict("records")]
    return markdown_table(["generator", "samples", "real", result.fid_label,
                           f"KID ({result.feature_space}; ± sd over subsets)", f"precision (k={KNN_K})",
                           f"recall (k={KNN_K})"], rows)


def kid_text(result: FidelityResult, row: dict) -> str:
    """'0.0123 ± 0.0011 (100 subsets of 1000)', or the KID alone where one subset was possible (no sd)."""
    _, kid_name, kid_sd_name = distance_columns(result.feature_key)
    if not np.isfinite(row[kid_sd_name]):
        return f"{row[kid_name]:.4g} (one subset: all {row['kid_subset_size']} of each; no sd)"
    return f"{row[kid_name]:.4g} ± {row[kid_sd_name]:.2g} ({row['kid_subsets']} subsets of {row['kid_subset_size']})"


def headline(result: FidelityResult) -> str:
    """One sentence a generator pair on the background: the study's darker-background finding, tested."""
    p = result.pooled[(result.pooled["statistic"] == "background") & (result.pooled["b"] != "real")]
    lines = [f"Background luminance, {r.a} - {r.b}: {r.mean_diff:+.2f} (luma 0-255; {_fmt(r.sample_mean)} vs "
             f"{_fmt(r.real_mean)}), Welch p {format_p(r.welch_p)}, Mann-Whitney p {format_p(r.mwu_p)}."
             for r in p.itertuples()]
    return " ".join(lines) or "One generator only: no generator-to-generator background comparison."


def pooled_table(result: FidelityResult) -> str:
    rows = [[r.a, r.b, f"{r.statistic} ({r.unit})", r.n_sample, r.n_real, _fmt(r.sample_mean), _fmt(r.real_mean),
             f"{r.mean_diff:+.3f}" if np.isfinite(r.mean_diff) else "-", format_p(r.welch_p), format_p(r.mwu_p)]
            for r in result.pooled.itertuples()]
    return markdown_table(["a", "b", "statistic", "n a", "n b", "mean a", "mean b", "diff (a - b)", "p (Welch)",
                      "p (Mann-Whitney)"], rows)


def per_class_table(result: FidelityResult) -> str:
    rows = [[r.generator, r["class"], f"{r.statistic} ({r.unit})", r.n_sample, _fmt(r.sample_mean), _fmt(r.real_mean),
             f"{r.mean_diff:+.3f}" if np.isfinite(r.mean_diff) else "-", format_p(r.welch_p), format_p(r.q_bh),
             format_p(r.mwu_p)]
            for _, r in result.statistics.iterrows()]
    return markdown_table(["generator", "class", "statistic", "samples", "sample mean", "real mean", "diff",
                      "p (Welch)", "BH q", "p (Mann-Whitney)"], rows)


def labeller_section(result: FidelityResult) -> str:
    lines = []
    for name, part in result.confidence.groupby("generator", sort=False):
        high = part.loc[part["bin_low"] >= 0.9 - 1e-9, "fraction"].sum()
        low = part.loc[part["bin_high"] <= 0.5 + 1e-9, "fraction"].sum()
        lines.append(f"- {name}: {int(part['count'].sum())} unconditional samples labelled; confidence >= 0.9 for "
                     f"{high:.1%}, <= 0.5 for {low:.1%} (confidence.csv, confidence.png)")
    for name, part in result.agreement.groupby("generator", sort=False):
        total = part["n"].sum()
        share = part["agree"].sum() / total if total else math.nan
        per = ", ".join(f"{r['class']} {r['fraction']:.0%}" for _, r in part.iterrows() if r["n"])
        lines.append(f"- {name}: the labeller agrees with the conditioning class on {share:.1%} of {total} "
                     f"samples ({per})")
    return "\n".join(lines) or "no generator"


def summary_lines(result: FidelityResult) -> list[str]:
    """What the CLI prints: the distances and the background headline."""
    lines = [f"fidelity: preset {result.preset}, data {result.data}, {result.samples_per_class} samples a class, "
             f"features: {result.feature_space}"]
    fid_name, kid_name, _ = distance_columns(result.feature_key)
    for r in result.distances.to_dict("records"):
        lines.append(f"  {r['generator']}: {fid_name} {_fmt(r[fid_name])}, {kid_name} {kid_text(result, r)}, "
                     f"precision {_fmt(r['precision'])}, recall {_fmt(r['recall'])} ({r['samples']} samples vs "
                     f"{r['real']} real)")
    if not result.cas.empty:
        lines.append(f"  CAS ({result.cas_setup}): real-data reference {_pct(_cas_row(result, REAL, OVERALL)['cas'])}")
        for s in result.samples:
            row = _cas_row(result, s.name, OVERALL)
            per = ", ".join(f"{c} {_pct(_cas_row(result, s.name, c)['cas'])}" for c in result.classes)
            lines.append(f"  CAS {s.name}: {_pct(row['cas'])}, gap {_pp(row['gap'])} pp ({per})")
    for r in result.memorisation.table.itertuples():
        lines.append(f"  nearest training image, {r.source}: median {_fmt(r.median)}, min {_fmt(r.min)} ({DISTANCE}); "
                     f"{r.flagged} of {r.n} closer than the reference's p{REFERENCE_PERCENTILE:g}")
    for r in result.pooled[result.pooled["statistic"] == "background"].itertuples():
        lines.append(f"  background {r.a} - {r.b}: {r.mean_diff:+.2f} luma, Welch p {format_p(r.welch_p)}")
    if np.isfinite(result.labeller_test_acc):
        lines.append(f"  pseudo-labeller test accuracy {result.labeller_test_acc:.1%}")
    if "classifier" in result.fid_label:
        lines.append(f"  note: {result.fid_label}")
    return lines + [f"  note: {n}" for n in result.notes]


def write_outputs(result: FidelityResult, folder: str | Path) -> list[Path]:
    """report.md, one CSV a table and the PNG figures in `folder`; the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    tables = {"distances": result.distances, "statistics": result.statistics, "pooled": result.pooled,
              "image_values": result.values, "confidence": result.confidence, "agreement": result.agreement,
              "memorisation": result.memorisation.table, "cas": result.cas}
    for name, table in tables.items():
        table.to_csv(folder / f"{name}.csv", index=False)
        written.append(folder / f"{name}.csv")
    figures = {"statistics.png": lambda: plot_statistics(result.values, result.classes),
               "samples.png": lambda: sample_grids_figure(result)}
    if result.memorisation.pairs:
        figures["closest_pairs.png"] = lambda: plot_closest_pairs(result.memorisation)
    if not result.confidence.empty:
        figures["confidence.png"] = lambda: plot_confidence(result.confidence)
    if not result.agreement.empty:
        figures["agreement.png"] = lambda: plot_agreement(result.agreement, result.classes)
    for name, plot in figures.items():
        plot().savefig(folder / name, dpi=120, bbox_inches="tight")
        written.append(folder / name)
    (folder / "report.md").write_text(markdown_report(result, [p.name for p in written if p.suffix == ".png"]))
    return [*written, folder / "report.md"]


def fidelity_metrics(result: FidelityResult) -> dict[str, float]:
    """fid_<features>.<gen>, kid_<features>.<gen> (named by their feature space: fid_labeller_features,
    fid_inception), precision.<gen>, recall.<gen>, background_diff.<gen> (vs real), nearest_train_median.<gen>
    (memorisation.DISTANCE), memorised_share.<gen> (the share flagged, 0-1), labeller_test_acc (a fraction, 0-1);
    cas.<gen> and cas.<gen>.<class> (synthaug.analysis.cas, fractions), cas_gap.<gen> (CAS - the reference), and the
    real-data reference's cas_real_reference and cas_real_reference.<class>."""
    metrics = {"labeller_test_acc": result.labeller_test_acc}
    fid_name, kid_name, _ = distance_columns(result.feature_key)
    for r in result.distances.to_dict("records"):
        name = r["generator"]
        metrics |= {f"{fid_name}.{name}": r[fid_name], f"{kid_name}.{name}": r[kid_name],
                    f"precision.{name}": r["precision"], f"recall.{name}": r["recall"]}
    for r in result.memorisation.table.itertuples():
        if r.source != REFERENCE:
            metrics |= {f"nearest_train_median.{r.source}": r.median, f"memorised_share.{r.source}": r.flagged_share}
    for r in result.cas.to_dict("records"):
        real = r["generator"] == REAL
        name = "cas_real_reference" if real else f"cas.{r['generator']}"
        metrics[name if r["class"] == OVERALL else f"{name}.{r['class']}"] = r["cas"]
        if r["class"] == OVERALL and not real:
            metrics[f"cas_gap.{r['generator']}"] = r["gap"]
    vs_real = result.pooled[result.pooled["b"] == "real"]
    for r in vs_real.itertuples():
        metrics[f"{r.statistic}_diff.{r.a}"] = r.mean_diff
    return {k: float(v) for k, v in metrics.items() if np.isfinite(v)}


DESCRIPTION = ("E5 fidelity runs (analysis/fidelity.py): how each generator's samples differ from the real test "
               "images, one run a preset and data set. Metrics name their feature space (FID/KID, precision, "
               "recall) and statistic; cas.<generator> is the accuracy on real test images of a classifier trained "
               "on its samples alone; report.md, the CSVs and figures are its artifacts.")


def log_fidelity(uri: str, result: FidelityResult, folder: str | Path) -> str:
    """An 'analysis' run (synthaug.analysis=fidelity) in experiment 'fidelity' with `folder` as artifacts."""
    params = {"preset": result.preset, "data": result.data, "samples_per_class": result.samples_per_class,
              "seed": result.seed, "feature_space": result.feature_space,
              "generators": [s.name for s in result.samples], "cas_setup": result.cas_setup}
    return log_folder_run(uri, ensure_experiment(uri, EXPERIMENT, DESCRIPTION), f"fidelity {result.preset} "
                          f"{result.data}", {ROLE: "analysis", ANALYSIS: "fidelity"}, params, fidelity_metrics(result),
                          folder)


def _fmt(x: float) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.3f}"
