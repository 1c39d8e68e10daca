"""The study's figures for one sweep, with intervals across seeds.

    python analysis/figures.py --experiment long_tail                     # newest sweep, local mlflow.db
    python analysis/figures.py --experiment replace_pct --sweep replace_pct-smoke-1a2b3c4d \\
        --mlflow-uri http://HEAD:5000 --cache .synthaug --out figs/
    python analysis/figures.py --experiment cond_vs_uncond --no-log

From the FINISHED trial runs of the sweep: training-set composition, per-class accuracy with
95% t intervals and BH-significance marks, confusion matrices (mean over seeds) and their
paired differences from the baseline, the metric against each numeric grid axis, and sample
grids of each generator from the pool store under --cache. PNGs and the CSVs behind them go
to --out (default analysis_out/<experiment>/<sweep>/figures) and are logged as an "analysis"
run (tag synthaug.analysis=figures) in the MLflow experiment <experiment>-analysis unless --no-log.
Bad input: one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from synthaug.analysis.figures import log_figures, write_figures
from synthaug.core.storage import DEFAULT_CACHE
from synthaug.sweep.cli import load_sweep, sweep_parser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = sweep_parser("analysis/figures.py", __doc__.splitlines()[0])
    parser.add_argument("--cache", default=DEFAULT_CACHE, help="cache folder with pools/ and generators/ "
                                                               f"(default ./{DEFAULT_CACHE}), for the sample grids")
    parser.add_argument("--out", help="output folder; default analysis_out/<experiment>/<sweep>/figures")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    loaded = load_sweep(args, folders=("cache",))
    if loaded is None:
        return 2
    uri, trials, result = loaded
    out = Path(args.out or Path("analysis_out") / args.experiment / trials.sweep / "figures")
    print(f"{trials.experiment} / {trials.sweep}: {trials.metric}, baseline {result.baseline}, "
          f"{len(result.summary)} configurations, {len(result.seeds)} seeds")
    written, notes = write_figures(trials, result, out, cache_dir=args.cache)
    for note in notes:
        print(f"note: {note}")
    for path in written:
        if path.suffix == ".png":
            print(f"figure: {path}")
    if not args.no_log:
        print(f"analysis run: {log_figures(trials, result, out)} (experiment {trials.experiment}-analysis, {uri})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
