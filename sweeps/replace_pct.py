"""E4, replacement: p% of each class's real images replaced by pseudo-labelled unconditional samples.

    python sweeps/replace_pct.py                          # smoke preset, 3 seeds, offline (shapes)
    python sweeps/replace_pct.py --preset smoke --seeds 2 --data cifar10    # torchvision downloads it
    python sweeps/replace_pct.py --preset paper --seeds 5 --address auto --mlflow-uri http://HEAD:5000

Balanced CIFAR-10 (5,000 a class), p in {0, 2, ..., 12}; the study reports 77.37% at 2%.
Replacement adds no images, so there are no control arms. Declared before it runs (tag
synthaug.primary): the primary contrast is 2% against 0%, and a trend in p.
Rerunning the same command resumes an interrupted sweep.
"""

import sys

from synthaug.sweep.runner import Experiment, main

EXPERIMENT = Experiment(
    name="replace_pct",
    grid={"replace_pct": [0, 2, 4, 6, 8, 10, 12]},
    fixed={"imbalance": 1.0, "generator": "ddpm-uncond"},
    paper_fixed={"train.epochs": 50},
    primary=(("replace_pct=2", ""),),
    trend="replace_pct",
    description=__doc__.splitlines()[0],
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
