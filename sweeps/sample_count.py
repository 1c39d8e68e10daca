"""Sample count: how accuracy grows with K class-conditional samples added to CIFAR-LT, and where it stops.

    python sweeps/sample_count.py                          # smoke preset, 3 seeds, offline (shapes)
    python sweeps/sample_count.py --preset paper --data cifar10
    python analysis/sample_count.py --experiment sample_count      # the fitted curves and their report

CIFAR-LT (imbalance 0.1) plus K class-conditional samples of truck, or of ship, for K in
{0, 100, 250, 500, 1000, 2000, 5000} at the study's scale (n_max = 5000; the study used 500);
the smoke preset scales K to its n_max of 100 (0 to 100). K = 0 (no samples) is the one baseline
both class sets share, run once: 13 configurations, not 14. The analysis fits accuracy, overall
and of the targeted class, against K with seed-bootstrap intervals and says by which K more
samples stop helping.
"""

import sys

from synthaug.sweep import Experiment, main

EXPERIMENT = Experiment(
    name="sample_count",
    grid={"augment_classes": [["truck"], ["ship"]], "augment_count": [0, 2, 5, 10, 20, 40, 100]},
    fixed={"imbalance": 0.1, "generator": "ddpm-cond"},
    paper_grid={"augment_count": [0, 100, 250, 500, 1000, 2000, 5000]},
    paper_fixed={"train.epochs": 30},
    run_once={"augment_count": 0},      # the baseline, no samples: one configuration, not one a class set
    description=__doc__.splitlines()[0],
    analysis="analysis/sample_count.py",
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
