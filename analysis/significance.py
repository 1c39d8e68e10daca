"""Which configurations of a sweep beat the baseline, and by how much, across seeds.

    python analysis/significance.py --experiment replace_pct                  # newest sweep, local mlflow.db
    python analysis/significance.py --experiment replace_pct --sweep replace_pct-smoke-1a2b3c4d \\
        --baseline replace_pct=0 --mlflow-uri http://HEAD:5000
    python analysis/significance.py --experiment cond_vs_uncond --baseline arm=unconditional --no-log

Prints the sweep's declared primary analysis first (each contrast by the seed-paired t, whose interval
covers seeds, and by the two-way seed x test image t from predictions.csv, whose interval covers seeds
and test images, Holm over the primary family; the trend; what one synthetic image is worth in real
images, Fieller), then the power at declared effects, then every configuration against the baseline
(secondary, Holm within it); writes report.md, CSVs and figures to --out (default
analysis_out/<experiment>/<sweep>), and logs that folder as an "analysis" run in the MLflow experiment
<experiment>-analysis. Bad input (two FINISHED runs of one configuration and seed among them): one line
on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from synthaug.analysis.significance import log_analysis
from synthaug.analysis.significance_report import format_table, write_outputs
from synthaug.sweep.cli import load_sweep, sweep_parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = sweep_parser("analysis/significance.py", __doc__.splitlines()[0])
    parser.add_argument("--out", help="output folder; default analysis_out/<experiment>/<sweep>")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    loaded = load_sweep(args, with_predictions=True)
    if loaded is None:
        return 2
    uri, trials, result = loaded
    out = Path(args.out or Path("analysis_out") / args.experiment / trials.sweep)
    print(f"{trials.experiment} / {trials.sweep}: {trials.metric}, baseline {result.baseline}, "
          f"{len(result.seeds)} seeds\n")
    print(format_table(result))
    for warning in result.warnings:
        print(f"warning: {warning}")
    write_outputs(result, out)
    if not args.no_log:
        print(f"\nanalysis run: {log_analysis(trials, result, out)} (experiment {trials.experiment}-analysis, {uri})")
    print(f"report: {(out / 'report.md').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
