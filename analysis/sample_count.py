"""Where more synthetic samples stop helping (or start to hurt): accuracy against K, fitted, with intervals.

    python analysis/sample_count.py --experiment sample_count                 # newest sweep, local mlflow.db
    python analysis/sample_count.py --experiment sample_count --sweep sample_count-smoke-1a2b3c4d --no-log

For each class set of a sweeps/sample_count.py sweep, and for overall accuracy and the targeted
class's, prints either the fitted gain and K90 (the K by which 90% of it is reached) or, where the
curve rises then falls, the K of its peak, with seed-bootstrap intervals widened to cover at a few
seeds (synthaug.analysis.sample_curve), writes report.md, CSVs and a figure to --out (default
analysis_out/<experiment>/<sweep>), and logs that folder as an "analysis" run in the MLflow
experiment <experiment>-analysis. Bad input: one line on stderr, exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from synthaug.sweep.cli import sweep_parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = sweep_parser("analysis/sample_count.py", __doc__.splitlines()[0])
    parser.add_argument("--out", help="output folder; default analysis_out/<experiment>/<sweep>")
    args = parser.parse_args(argv)

    from synthaug.analysis.results import InputError, load_trials
    from synthaug.analysis.sample_curve import sample_curves, write_outputs
    from synthaug.core.tracking import ROLE, SWEEP, analysis_experiment, log_folder_run, resolve_tracking_uri

    uri = resolve_tracking_uri(args.mlflow_uri)
    try:
        trials = load_trials(uri, args.experiment, args.sweep, args.metric)
        curves = sample_curves(trials)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out or Path("analysis_out") / args.experiment / trials.sweep)
    for curve in curves:
        print(f"+K {curve.class_set}, {curve.metric} ({curve.seeds} seeds): {curve.verdict()}")
    write_outputs(curves, out, trials.experiment, trials.sweep)
    if not args.no_log:
        metrics = {f"{k}.{c.class_set}.{c.metric}": v for c in curves
                   for k, v in (("gain", c.gain), ("gain_low", c.gain_low), ("gain_high", c.gain_high),
                                ("k90", c.k90), ("peak", c.peak)) if v == v}
        run_id = log_folder_run(uri, analysis_experiment(uri, trials.experiment), f"sample count {trials.sweep}",
                                {ROLE: "analysis", SWEEP: trials.sweep}, {"metric": trials.metric}, metrics, out)
        print(f"analysis run: {run_id} (experiment {trials.experiment}-analysis, {uri})")
    print(f"report: {(out / 'report.md').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
