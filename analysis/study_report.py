"""Which of the study's claims hold, by how much and how sure: one report from MLflow alone.

    python analysis/study_report.py                                   # the newest study run (sweeps/study.py)
    python analysis/study_report.py --study RUN_ID --mlflow-uri http://HEAD:5000
    python analysis/study_report.py --sweep long_tail --sweep replace_pct:replace_pct-smoke-1a2b3c4d \\
        --fidelity-run RUN_ID --no-log

One row a claim of the study (synthaug.study.claims.STUDY): the study's own figure, ours with its 95% interval and
what it covers, the primary test and its adjusted p, and a verdict (reproduced, contradicted, or inconclusive
with the smallest effect these seeds detect); then what was run (commit, seeds, data digest, throughput row)
and every deviation from the study, read from the runs. An experiment not given is "not run". Writes
report.md, a self-contained report.html, claims.csv and the figures to --out (default
analysis_out/study/<study run or "sweeps">), and logs them as artifacts of the study run (or, given sweeps
only, as an analysis run in the experiment study-analysis) unless --no-log. Bad input: one line, exit 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

from synthaug.sweep.cli import OneLineParser


def parse_args(argv: Sequence[str] | None):
    parser = OneLineParser(prog="analysis/study_report.py", description=__doc__.splitlines()[0])
    parser.add_argument("--study", help="a study run's id (default: the newest study run)")
    parser.add_argument("--sweep", action="append", default=[],
                        help="experiment[:sweep] instead of a study run, e.g. long_tail:NAME (default sweep: the "
                             "newest in that experiment); repeatable")
    parser.add_argument("--fidelity-run", help="the E5 fidelity run's id (analysis/fidelity.py)")
    parser.add_argument("--out", help="output folder; default analysis_out/study/<study run, or 'sweeps'>")
    parser.add_argument("--mlflow-uri", help="tracking URI; default $MLFLOW_TRACKING_URI, else ./mlflow.db")
    parser.add_argument("--no-log", action="store_true", help="do not log the report to MLflow")
    args = parser.parse_args(argv)
    if args.study and args.sweep:
        parser.error("--study: give a study run or --sweep, not both")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from synthaug.analysis.results import InputError
    from synthaug.core.tracking import resolve_tracking_uri, sqlite_path
    from synthaug.study.study_inputs import analyse_sweeps, load_fidelity, read_inputs
    from synthaug.study.study_report import build, log_report, markdown, write

    uri = resolve_tracking_uri(args.mlflow_uri)
    try:
        if sqlite_path(uri) is not None and not sqlite_path(uri).exists():
            raise InputError(f"--mlflow-uri: no MLflow store at {sqlite_path(uri)}")
        inputs = read_inputs(uri, args.study, args.sweep, args.fidelity_run)
        analysed, not_run = analyse_sweeps(uri, inputs)
        fidelity = load_fidelity(uri, inputs.fidelity_run) if inputs.fidelity_run else None
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = build(analysed, fidelity, inputs, not_run)
    out = Path(args.out or Path("analysis_out") / "study" / (inputs.study_run or "sweeps"))
    write(report, out)
    print(markdown(report).split("\n## What was run")[0])
    if not args.no_log:
        print(f"logged to run {log_report(uri, report, out, inputs.study_run)} ({uri})")
    print(f"report: {(out / 'report.md').resolve()}\npage: {(out / 'report.html').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
