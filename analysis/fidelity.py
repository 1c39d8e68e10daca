"""E5, fidelity: each generator's samples against the real test images, class by class.

    python analysis/fidelity.py                                   # smoke preset, 100 samples a class
    python analysis/fidelity.py --preset paper --data ../shared/data/cifar10-jpeg.tar.gz \\
        --mlflow-uri http://HEAD:5000                             # 1,000 samples a class (the preset's)
    python analysis/fidelity.py --preset tiny --samples-per-class 4 --no-log   # seconds of sampling, for wiring

For every generator of the preset: prepare it (trained once, cached under --cache), take
--samples-per-class images a class (default: the preset's fidelity_per_class: 100 for smoke and
tiny, 1,000 for paper, the study's scale) from its pools (pool seed --seed; generated once, shared
with the sweeps), and compare them with the test split: brightness, background (border)
luminance and saturation per class with Welch and Mann-Whitney tests, FID and KID, precision
and recall (k = 3), the pseudo-labeller's confidence and agreement, each sample's distance
to its nearest training image beside the test images' (memorisation), and CAS: the preset's
classifier recipe trained on --cas-per-class of the generator's pool images a class alone (default:
the preset's real_per_class), tested on the real test images, beside the same recipe trained once
on as many real images a class (synthaug.analysis.cas). Writes report.md,
CSVs and PNGs to --out (default analysis_out/fidelity/<preset>) and logs them as an
"analysis" run in MLflow experiment "fidelity" unless --no-log. Bad input: one line, exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

# Only what parsing needs is imported here: --help and bad flags answer at once. The presets (torch), the
# samplers, MLflow and the reports come after the flags are read.
from synthaug.core.storage import DEFAULT_CACHE
from synthaug.sweep.cli import OneLineParser


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="analysis/fidelity.py", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="smoke", help="a preset's name: tiny, smoke, paper, ... "
                                                          "(synthaug.config.PRESETS; default smoke)")
    parser.add_argument("--data", help="shapes, cifar10, or a class-folder folder/.tar/.tar.gz (default: the preset's)")
    parser.add_argument("--cache", default=DEFAULT_CACHE, help=f"data, generators and pools (default ./{DEFAULT_CACHE})")
    parser.add_argument("--samples-per-class", type=int,
                        help="samples a class a generator (default: the preset's fidelity_per_class)")
    parser.add_argument("--cas-per-class", type=int, metavar="K",
                        help="CAS: pool images a class a generator's classifier trains on, and real images a class "
                             "the reference trains on (default: the preset's real_per_class; 0: all a class has)")
    parser.add_argument("--seed", type=int, default=0, help="pool seed (default 0: the pools trials of seed 0 use)")
    parser.add_argument("--mlflow-uri", help="tracking URI; default $MLFLOW_TRACKING_URI, else ./mlflow.db")
    parser.add_argument("--out", help="output folder; default analysis_out/fidelity/<preset>")
    parser.add_argument("--no-log", action="store_true", help="do not log an analysis run to MLflow")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace):
    """Validated settings (synthaug.analysis.fidelity.Settings); ConfigError or DataError (one line naming the flag) when
    a value is bad. The flags that need no import are checked before the presets are imported."""
    from synthaug.core.rules import ConfigError

    if args.samples_per_class is not None and args.samples_per_class < 2:
        raise ConfigError(f"--samples-per-class: an integer >= 2, got {args.samples_per_class}")
    if args.cas_per_class is not None and args.cas_per_class < 0:
        raise ConfigError(f"--cas-per-class: an integer >= 0 (0: all a class has), got {args.cas_per_class}")
    if args.seed < 0:
        raise ConfigError(f"--seed: an integer >= 0, got {args.seed}")
    cache = Path(args.cache).resolve()
    if cache.exists() and not cache.is_dir():
        raise ConfigError(f"--cache: {args.cache!r} is not a folder")
    from synthaug.analysis.fidelity import Settings
    from synthaug.config import preset
    from synthaug.data.sources import resolve_source

    chosen = preset(args.preset)
    return Settings(chosen, resolve_source(args.data or chosen.data), cache,
                    args.samples_per_class or chosen.fidelity_per_class, args.seed, progress=True,
                    cas_per_class=args.cas_per_class)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")    # keeps stderr to errors
    from synthaug.core.rules import ConfigError
    from synthaug.data.sources import DataError

    try:
        settings = settings_from(args)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from synthaug.analysis.fidelity import run_fidelity
    from synthaug.analysis.fidelity_report import log_fidelity, summary_lines, write_outputs
    from synthaug.core.tracking import resolve_tracking_uri

    result = run_fidelity(settings)
    out = Path(args.out or Path("analysis_out") / "fidelity" / settings.preset.name)
    write_outputs(result, out)
    print("\n".join(summary_lines(result)))
    if not args.no_log:
        uri = resolve_tracking_uri(args.mlflow_uri)
        print(f"analysis run: {log_fidelity(uri, result, out)} (experiment fidelity, {uri})")
    print(f"report: {(out / 'report.md').resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
