"""Sample count: how accuracy grows with K class-conditional samples added to CIFAR-LT, and where it stops.

    python sweeps/sample_count.py                          # smoke preset, 3 seeds, offline (shapes)
    python sweeps/sample_count.py --preset paper --data cifar10
    python analysis/sample_count.py --experiment sample_count      # the fitted curves and their report

CIFAR-LT (imbalance 0.1) plus K images of truck, or of ship, for K in {0, 100, 250, 500, 1000,
2000, 4000} at the study's scale (n_max = 5000; the study used 500); the smoke preset scales K to
its n_max of 100 (0 to 100). Each class set and K > 0 is crossed with the arms (as sweeps/long_tail.py):
synthetic (ddpm-cond-subset, which learns only the trial's real images: primary), synthetic-full-split
(ddpm-cond, the whole split: an upper bound), equal-steps (synthetic at the baseline's optimizer
steps), oversample, reweight and withheld-real (K real images from outside the trial's subset).
K = 0 adds nothing whatever the class set or arm: one baseline, "none", run once (73 configurations).
The paper grid stops at 4,000, not 5,000: the withheld-real arm takes K trucks from outside the
trial's subset of 500, beside the validation images held out of the 5,000, so K = 5,000 cannot be
drawn. Declared before it runs (tag synthaug.primary): a trend in K within the synthetic arm, and the
exchange rate of synthetic against withheld-real. The analysis fits accuracy, overall and of the
targeted class, against K with seed intervals and says by which K more samples stop helping.
"""

import sys

from synthaug.sweep.runner import CONTROL_ARMS, NO_AUGMENTATION, Experiment, main

SUBSET = "ddpm-cond-subset"

EXPERIMENT = Experiment(
    name="sample_count",
    grid={"augment_classes": [["truck"], ["ship"]], "augment_count": [0, 2, 5, 10, 20, 40, 100]},
    arms={**NO_AUGMENTATION, "synthetic": {"generator": SUBSET}, "synthetic-full-split": {"generator": "ddpm-cond"},
          "equal-steps": {"generator": SUBSET, "train.budget": "steps"}, **CONTROL_ARMS},
    fixed={"imbalance": 0.1, "generator": SUBSET},
    paper_grid={"augment_count": [0, 100, 250, 500, 1000, 2000, 4000]},
    paper_fixed={"train.epochs": 30},
    run_once={"augment_count": 0},      # the baseline, no images added: one configuration, the arm "none"
    trend="augment_count",
    trend_within="arm=synthetic",
    exchange=(("arm=synthetic", "arm=withheld-real"),),
    description=__doc__.splitlines()[0],
    analysis="analysis/sample_count.py",
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
