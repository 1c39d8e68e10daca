"""The whole study as one job: E1+E2, E2a, E3, E4 (each sweep with its control arms) and E5, on one Ray session.

    python sweeps/study.py --preset smoke --data shapes      # every experiment, 2 seeds, offline; resumable
    python sweeps/study.py --preset paper --dry-run          # every experiment's trials, the GPU-hours in all
    python sweeps/study.py --only E3,E4 --preset tiny        # some of them (ids or script names)

The experiments are the sweep scripts' own declarations (their EXPERIMENT), imported from this folder;
synthaug.study.experiments says which study id each is, what the study run in MLflow holds (experiment "study",
tag synthaug.study.sweeps) and how a rerun resumes. sample_count goes past the study: --extended
or --only sample_count adds it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # the sweep scripts beside it (also under runpy)

import cond_vs_uncond
import imagenet_targeted
import long_tail
import replace_pct
import sample_count

from synthaug.study.study_job import main

EXPERIMENTS = {module.EXPERIMENT.name: module.EXPERIMENT
               for module in (long_tail, imagenet_targeted, cond_vs_uncond, replace_pct, sample_count)}

if __name__ == "__main__":
    sys.exit(main(EXPERIMENTS))
