"""The study report: the claims table (synthaug.study.claims) with what was run, how it differs from the study, and
its figures, as report.md and a self-contained report.html (figures inline as base64 PNG).

    report = build(analysed, fidelity, inputs, not_run)   # study_inputs.analyse_sweeps, claims.Fidelity, study_inputs.Inputs
    write(report, folder)                           # report.md, report.html, claims.csv, *.png
    log_report(uri, report, folder)                 # artifacts of the study run, else an analysis run in study-analysis

Deviations from the study are read from the runs (a sweep's parent params base.*, a trial's generator_spec.*), each
with the file and field that sets it; provenance (commit, seeds, data digest, throughput row) from the sweeps'
parent runs' tags and params.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from synthaug.core.report import format_p, markdown_table
from synthaug.study import claims
from synthaug.study.claims import ClaimRow
from synthaug.study.study_inputs import Analysed, Fidelity, Inputs

THROUGHPUT_TAG = "synthaug.throughput"      # a sweep run's throughput row, where the sweep recorded one
CLAIM_HEADERS = ("claim", "the study", "source", "ours (95% CI)", "interval covers", "primary test", "adj. p",
                 "verdict")
CIFAR_GENERATED = ("E1+E2", "E3", "E4")     # the experiments whose images come from a DDPM of CIFAR-10's classes
# (what, the study's, where ours is set, the params of a finished trial that uses synthetic images that say what
# ours is, the experiments it concerns)
DEVIATIONS = (
    ("CIFAR-10 generator", "improved DDPM (Nichol & Dhariwal), most likely its released 500K-step checkpoint",
     "GeneratorSpec.ddpm / .checkpoint (synthaug/config.py; --set generators.<name>.*, --checkpoint)",
     ("generator_spec.checkpoint", "generator_spec.ddpm.train_steps", "generator_spec.ddpm.beta_schedule",
      "generator_spec.ddpm.block_out_channels"), CIFAR_GENERATED),
    ("sampler", "improved DDPM's learned-variance ancestral sampler",
     "GeneratorSpec.sampler (synthaug/diffusion/sampling.py SamplerConfig)",
     ("generator_spec.sampler.name", "generator_spec.sampler.steps"), CIFAR_GENERATED),
    ("what the generator learned", "the whole training split", "GeneratorSpec.train_on; the arms of "
     "sweeps/long_tail.py and cond_vs_uncond.py (ddpm-*-subset: the trial's own subset)",
     ("generator", "generator_spec.train_on"), CIFAR_GENERATED),
    ("ImageNet model (E2a)", "improved DDPM ImageNet 64x64 class-conditional (270M parameters)",
     "GeneratorSpec.checkpoint (--checkpoint imagenet=FILE.pt), else .pretrained (DiT-XL/2 256x256, a substitute), "
     ".guidance_scale, .label_map; at the smoke preset .train_data (a DDPM of an outside set, a stand-in) "
     "(config.py, sweeps/imagenet_targeted.py)",
     ("generator_spec.checkpoint", "generator_spec.pretrained", "generator_spec.train_data",
      "generator_spec.guidance_scale", "generator_spec.label_map"), ("E2a",)),
    ("classifier recipe", "SGD, lr 0.01, batch 256; nothing else stated", "TrialConfig.recipe (config.RECIPES)",
     ("recipe", "train.momentum", "train.weight_decay", "train.schedule", "train.augment"), ()),
    ("architecture", "\"standard ResNet18\"", "TrainConfig.stem, .width (synthaug/models/classifier.py)",
     ("train.stem", "train.width"), ()),
    ("scale", "K = 500, 30 epochs (E1-E3) or 50 (E4), CIFAR-10", "the preset (config.PRESETS), the sweeps' "
     "paper_fixed; --preset, --data, --set", ("data", "augment_count", "train.epochs", "real_per_class"), ()),
)
USED_WITH = {"generator_spec.guidance_scale": "generator_spec.pretrained"}     # a field only a pipeline reads


@dataclass(frozen=True, eq=False)
class Report:
    title: str
    rows: list[ClaimRow]
    provenance: pd.DataFrame        # a row an experiment: sweep, preset, seeds, commit, data digest, throughput
    deviations: pd.DataFrame        # a row a deviation x experiment
    cas: pd.DataFrame
    figures: dict[str, bytes]       # name -> PNG
    notes: list[str]


def build(analysed: Mapping[str, Analysed], fidelity: Fidelity | None, inputs: Inputs,
          not_run: Mapping[str, str] | None = None) -> Report:
    rows = claims.evaluate(analysed, fidelity, not_run)
    notes = [f"{key} ({a.trials.sweep}): {w}" for key, a in analysed.items() for w in a.result.warnings]
    notes += [f"{key}: not run: {why}" for key, why in (not_run or {}).items()]
    title = f"study {inputs.study_run}" if inputs.study_run else "sweeps " + ", ".join(
        a.trials.sweep for a in analysed.values())
    return Report(title, rows, provenance(analysed, fidelity), deviations(analysed), claims.cas_table(fidelity),
                  figures(rows, analysed), notes)


# ---------------------------------------------------------------------------- what was run


def provenance(analysed: Mapping[str, Analysed], fidelity: Fidelity | None) -> pd.DataFrame:
    rows = []
    for key, a in analysed.items():
        tags, params = _parent(a)
        commit = tags.get("synthaug.git_commit", "unknown")[:12] + (" (dirty)" if tags.get("synthaug.git_dirty") ==
                                                                    "true" else "")
        rows.append({"experiment": key, "sweep": a.trials.sweep, "preset": params.get("preset", "?"),
                     "seeds": " ".join(str(s) for s in a.result.seeds), "commit": commit,
                     "data digest": tags.get("synthaug.data_digest", "not recorded")[:16],
                     "throughput row": tags.get(THROUGHPUT_TAG) or default_throughput(params.get("preset", ""))})
    if fidelity is not None:
        tags = fidelity.tags
        rows.append({"experiment": "E5", "sweep": f"fidelity run {fidelity.run_id[:12]}",
                     "preset": tags.get("mlflow.runName", ""), "seeds": "-",
                     "commit": tags.get("synthaug.git_commit", "unknown")[:12], "data digest": "-",
                     "throughput row": "-"})
    return pd.DataFrame(rows, columns=["experiment", "sweep", "preset", "seeds", "commit", "data digest",
                                       "throughput row"])


def served_kinds(tags: Mapping[str, str]) -> dict[str, str]:
    """generator -> "kind (source)" from a sweep run's synthaug.generator.<instance>.kind/.source tags; the
    instances of one generator (ddpm-cond-subset:seed0-..., one a trial seed) once, by the generator's name."""
    prefix, found = "synthaug.generator.", {}
    for tag in sorted(tags):
        if tag.startswith(prefix) and tag.endswith(".kind"):
            instance = tag[len(prefix):-len(".kind")]
            source = tags.get(f"{prefix}{instance}.source")
            found.setdefault(instance.split(":")[0], tags[tag] + (f" ({source})" if source else ""))
    return found


def _parent(a: Analysed) -> tuple[Mapping[str, str], Mapping[str, str]]:
    """The sweep's parent run's tags and params (empty when it is gone)."""
    from mlflow.tracking import MlflowClient

    if not a.trials.sweep_run_id:
        return {}, {}
    run = MlflowClient(a.trials.tracking_uri).get_run(a.trials.sweep_run_id)
    return run.data.tags, run.data.params


def default_throughput(preset: str) -> str:
    """Where a sweep run records no throughput row: the BENCHMARKS.md row a dry run of its preset divides by
    when given no --gpu-model (the paper preset: sweep_plan.GPU_MODEL's; the others: their CPU row)."""
    from synthaug.sweep.sweep_plan import GPU_MODEL
    from synthaug.training.benchmarks import cpu_row, default_path, find_throughput

    try:
        row = find_throughput(default_path(), GPU_MODEL) if preset == "paper" else cpu_row(preset)
    except Exception:  # noqa: BLE001 - no BENCHMARKS.md or no such row: say so, the report goes on
        row = None
    if row is None:
        return "not recorded on the run"
    return f"not recorded on the run; a dry run's default: {row.device} ({row.size}), {row.source}"


def deviations(analysed: Mapping[str, Analysed]) -> pd.DataFrame:
    """A row a deviation and experiment: the study's, ours (from a finished trial's params), where it is set."""
    rows = []
    for key, a in analysed.items():        # what served each generator, as the sweep's run names it (serving.py)
        served = "; ".join(f"{name}: {kind}" for name, kind in served_kinds(_parent(a)[0]).items())
        if served:
            rows.append({"what": "generator kind and source", "the study": "improved-diffusion's models", "experiment":
                         key, "ours": served, "set in": "--checkpoint NAME=FILE.pt, the preset's generators "
                         "(synthaug/config.py); tags synthaug.generator.<name>.kind/.source of the sweep's run"})
    for what, study, where, keys, concerns in DEVIATIONS:
        for key, a in analysed.items():
            if concerns and key not in concerns:
                continue
            ours = described(_params(a, keys))
            if ours:
                rows.append({"what": what, "the study": study, "experiment": key, "ours": ours, "set in": where})
    return pd.DataFrame(rows, columns=["what", "the study", "experiment", "ours", "set in"])


def described(found: Mapping[str, str]) -> str:
    """'field=value; ...' of the params found, leaving out a field that none of the others makes read (USED_WITH:
    a stand-in DDPM logs the guidance scale it never uses)."""
    return "; ".join(f"{k.removeprefix('generator_spec.')}={v}" for k, v in found.items()
                     if USED_WITH.get(k, k) in found)


def _params(a: Analysed, keys: Sequence[str]) -> dict[str, str]:
    """The values of `keys` in the sweep's finished trial runs that use synthetic images (those that log
    generator_spec.*; every finished run when none does), each value once."""
    frame = a.trials.frame[a.trials.frame["run_id"].isin(a.result.values["run_id"])]
    uses = [c for c in frame.columns if c.startswith("generator_spec.")]
    if uses and frame[uses].notna().any(axis=1).any():
        frame = frame[frame[uses].notna().any(axis=1)]
    found = {}
    for key in keys:
        if key in frame:
            values = sorted({_text(v) for v in frame[key].dropna()})
            if values and values != [""]:
                found[key] = ", ".join(v or "''" for v in values)
    return found


def _text(value) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


# ---------------------------------------------------------------------------- figures


def figures(rows: Sequence[ClaimRow], analysed: Mapping[str, Analysed]) -> dict[str, bytes]:
    found = {"claims.png": _png(plot_claims(rows))}
    if "E4" in analysed and "replace_pct" in analysed["E4"].trials.config_columns:
        found["accuracy_vs_replace_pct.png"] = _png(plot_replacement(analysed["E4"]))
    return found


def plot_claims(rows: Sequence[ClaimRow]):
    """Each accuracy claim's effect (pp) with its 95% interval; the study's number where it gives one, else the
    direction it claims."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r.unit == "pp"]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(shown) + 1.2))
    labels = {"ours (95% CI)", "the study"}      # each labelled once
    for i, r in enumerate(shown):
        y = len(shown) - 1 - i
        if np.isfinite(r.estimate):
            lo, hi = (r.ci_low, r.ci_high) if np.isfinite(r.ci_low) else (r.estimate, r.estimate)
            ax.errorbar(r.estimate * 100, y, xerr=[[(r.estimate - lo) * 100], [(hi - r.estimate) * 100]], fmt="o",
                        color="C0", capsize=3, label=_once(labels, "ours (95% CI)"))
        else:
            ax.text(0, y, r.verdict, va="center", ha="center", fontsize=8, color="grey")
            continue
        if np.isfinite(r.claim.value):
            ax.plot(r.claim.value * 100, y, "D", color="C3", label=_once(labels, "the study"))
        else:
            marker = {claims.RISES: ">", claims.FALLS: "<"}.get(r.claim.direction, "|")
            ax.plot(0, y, marker, color="C3", alpha=0.5, markersize=9)
    ax.axvline(0, color="black", lw=0.6)
    ax.set_ylim(-0.6, len(shown) - 0.4)
    ax.set_yticks(range(len(shown)), [r.claim.key for r in reversed(shown)], fontsize=8)
    ax.set_xlabel("difference (percentage points); red: the study's number, or the direction it claims")
    ax.set_title("the study's claims: ours against the study's")
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def _once(left: set[str], label: str) -> str | None:
    """`label` the first time it is asked for, then None (a legend entry once)."""
    if label in left:
        left.discard(label)
        return label
    return None


def plot_replacement(a: Analysed):
    """E4: accuracy against the replaced share (figures.accuracy_axis / plot_accuracy_axis), the study's 77.37%
    at 2% beside it."""
    from synthaug.analysis.figures import accuracy_axis, plot_accuracy_axis

    summary, points = accuracy_axis(a.result, "replace_pct")
    fig = plot_accuracy_axis(summary, points, "replace_pct", a.result.metric)
    ax = fig.axes[0]
    scale = 100 if max(ax.get_ylim()) > 1.5 else 1
    ax.plot([2], [77.37 / 100 * scale], "D", color="C3", label="the study (Table 4): 77.37% at 2%")
    ax.legend(fontsize=8)
    return fig


def _png(fig) -> bytes:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


# ---------------------------------------------------------------------------- tables


def value_text(r: ClaimRow, x: float) -> str:
    if not np.isfinite(x):
        return "-" if not math.isinf(x) else ("+inf" if x > 0 else "-inf")
    if r.unit in ("pp", "pp / pp"):
        return f"{x * 100:+.2f}"
    if r.unit == "luma":
        return f"{x:+.1f}"
    if r.unit == "classes":
        return f"{x:+.0f}"
    return f"{x:.2f}"


def ours_text(r: ClaimRow) -> str:
    if not np.isfinite(r.estimate) or r.unit == "classes":
        return r.ours or "-"
    unit = {"pp": " pp", "pp / pp": " pp a point of p", "luma": " luma", "rate": " real images each"}[r.unit]
    interval = (f" ({value_text(r, r.ci_low)} to {value_text(r, r.ci_high)})"
                if np.isfinite(r.ci_low) or np.isinf(r.ci_low) else "")
    extra = f"; {r.ours}" if r.ours else ""
    return f"{value_text(r, r.estimate)}{unit}{interval}, n={r.n}{extra}"


def verdict_text(r: ClaimRow) -> str:
    if r.verdict == claims.INCONCLUSIVE and np.isfinite(r.detectable):
        return (f"inconclusive: these seeds detect only effects of {value_text(r, r.detectable).lstrip('+')}"
                f"{_unit(r)} or more (80% power)")
    if r.verdict == claims.INCONCLUSIVE and math.isinf(r.detectable):
        return "inconclusive: these seeds detect no effect within 1,000 sd"
    return r.verdict


def _unit(r: ClaimRow) -> str:
    return {"pp": " pp", "pp / pp": " pp/pp", "luma": " luma"}.get(r.unit, "")


def claim_table(rows: Sequence[ClaimRow]) -> tuple[tuple[str, ...], list[list[str]]]:
    body = [[r.claim.key + ": " + r.claim.claim, r.claim.study, r.claim.source, ours_text(r), r.covers or "-",
             r.test or "-", format_p(r.p_adjusted) if np.isfinite(r.p_adjusted) else "-", verdict_text(r)]
            for r in rows]
    return CLAIM_HEADERS, body


def claims_frame(rows: Sequence[ClaimRow]) -> pd.DataFrame:
    """The claims as a CSV: every number in its own unit (accuracies as fractions, as in MLflow)."""
    return pd.DataFrame([{"claim": r.claim.key, "experiment": r.claim.experiment, "study": r.claim.study,
                          "study_source": r.claim.source, "study_value": r.claim.value, "estimate": r.estimate,
                          "ci_low": r.ci_low, "ci_high": r.ci_high, "unit": r.unit, "interval_covers": r.covers,
                          "test": r.test, "p_adjusted": r.p_adjusted, "n": r.n, "detectable_at_80pct": r.detectable,
                          "verdict": r.verdict, "note": r.ours, "source": r.source} for r in rows])


def _frame_table(frame: pd.DataFrame) -> tuple[tuple[str, ...], list[list[str]]]:
    return tuple(frame.columns), [[_text(v) for v in row] for row in frame.itertuples(index=False)]


# ---------------------------------------------------------------------------- Markdown and HTML


def sections(report: Report) -> list[tuple[str, list[str], tuple | None]]:
    """(heading, paragraphs, table or None), in order; both renderings read these."""
    counts = pd.Series([r.verdict for r in report.rows]).value_counts()
    found = [("Claims", [", ".join(f"{n} {v}" for v, n in counts.items()) + f" of {len(report.rows)} claims.",
                         "Verdict rule: " + claims.VERDICT_RULE.replace("**", "")], claim_table(report.rows)),
             ("What was run", ["Each experiment's sweep (or the fidelity run), its seeds, the code's commit, the "
                               "data's digest and the throughput row its estimate used."],
              _frame_table(report.provenance)),
             ("Deviations from the study", ["Read from the runs' params (a finished trial's); where each is set."],
              _frame_table(report.deviations))]
    if not report.cas.empty:
        found.append(("CAS (train on synthetic, test on real)",
                      ["A classifier trained on a generator's images alone, tested on the real test images, beside "
                       "one trained the same way on real images (the fidelity run's cas.* metrics)."],
                      _frame_table(report.cas)))
    if report.notes:
        found.append(("Notes from the analyses", report.notes, None))
    return found


def markdown(report: Report) -> str:
    lines = [f"# Which of the study's claims hold: {report.title}", ""]
    for heading, paragraphs, table in sections(report):
        lines += [f"## {heading}", ""]
        for text in paragraphs:
            lines += [f"- {text}" if heading.startswith("Notes") else text, ""]
        if table is not None:
            lines += [markdown_table(*table), ""]
        if heading == "Claims":
            lines += [f"![{name}]({name})" for name in report.figures] + [""]
    return "\n".join(lines)


def html_page(report: Report) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>", f"<title>{esc(report.title)}</title>",
             "<style>body{font-family:sans-serif;max-width:80em;margin:1em auto;}table{border-collapse:collapse;"
             "font-size:0.85em}td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}"
             "tr.reproduced td:last-child{background:#dfd}tr.contradicted td:last-child{background:#fdd}"
             "</style></head><body>", f"<h1>Which of the study's claims hold: {esc(report.title)}</h1>"]
    for heading, paragraphs, table in sections(report):
        parts.append(f"<h2>{esc(heading)}</h2>")
        parts += [f"<p>{esc(text)}</p>" for text in paragraphs]
        if table is not None:
            headers, body = table
            klass = heading == "Claims"
            parts.append(f"<table{' id=claims' if klass else ''}><thead><tr>" +
                         "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr></thead><tbody>")
            for i, row in enumerate(body):
                attrs = (f" class='claim {esc(report.rows[i].verdict.replace(' ', '-'))}' "
                         f"data-claim='{esc(report.rows[i].claim.key)}'" if klass else "")
                parts.append(f"<tr{attrs}>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
            parts.append("</tbody></table>")
        if heading == "Claims":
            for name, png in report.figures.items():
                parts.append(f"<figure><img alt='{esc(name)}' src='data:image/png;base64,"
                             f"{base64.b64encode(png).decode()}'><figcaption>{esc(name)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write(report: Report, folder: str | Path) -> list[Path]:
    """report.md, report.html (self-contained), claims.csv and the figures' PNGs in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, png in report.figures.items():
        (folder / name).write_bytes(png)
    claims_frame(report.rows).to_csv(folder / "claims.csv", index=False)
    (folder / "report.md").write_text(markdown(report))
    (folder / "report.html").write_text(html_page(report))
    return [folder / n for n in ("report.md", "report.html", "claims.csv", *report.figures)]


def log_report(uri: str, report: Report, folder: str | Path, study_run: str | None) -> str:
    """The folder as artifacts (under report/) of the study run; without one, an analysis run in study-analysis."""
    from synthaug.core.tracking import ANALYSIS, ROLE, RunLogger, analysis_experiment, log_folder_run
    from synthaug.study.study_inputs import STUDY_EXPERIMENT

    if study_run:
        RunLogger(uri, study_run).log_artifacts(folder, "report")
        return study_run
    metrics = {f"verdict_{v.replace(' ', '_')}": float(sum(r.verdict == v for r in report.rows))
               for v in (claims.REPRODUCED, claims.CONTRADICTED, claims.INCONCLUSIVE, claims.NOT_RUN)}
    params = {"sweeps": [p for p in report.provenance["sweep"]]}
    return log_folder_run(uri, analysis_experiment(uri, STUDY_EXPERIMENT), f"study report {report.title}"[:250],
                          {ROLE: "analysis", ANALYSIS: "study_report"}, params, metrics, folder)
