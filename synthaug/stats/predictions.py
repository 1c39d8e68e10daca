"""Which test images each run got right, read from its predictions.csv and paired by seed.

    load = cached(functools.partial(results.load_predictions, uri), notes)
    correct = correct_by_seed(load, runs_t, runs_b)    # seed -> (treatment correct, baseline correct)
    differences(correct)                                # (seeds x images): treatment - baseline, in {-1, 0, 1}
    correct_grid(load, [runs_a, runs_b, runs_c])        # (seeds x configurations x images): right (1) or not

Every seed of a sweep is tested on the same test images; a seed's two runs are paired image by
image on `test_index`, and the seeds on the images every one of them has.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

Predictions = Callable[[str], pd.DataFrame]     # run_id -> predictions.csv as a frame
Correct = dict[int, pd.DataFrame]               # seed -> test_index, treatment, baseline (bool each)


def cached(predictions: Predictions, notes: list[str]) -> Callable[[str], pd.DataFrame | None]:
    """predictions, each run loaded once; a run without readable predictions is noted and gives None."""
    memo: dict[str, pd.DataFrame | None] = {}

    def load(run_id: str) -> pd.DataFrame | None:
        if run_id not in memo:
            try:
                frame = predictions(run_id)
                memo[run_id] = frame[["test_index", "label", "prediction"]]
            except (MlflowException, OSError, LookupError, ValueError) as err:
                notes.append(f"run {run_id[:8]}: no readable predictions.csv ({type(err).__name__}); left out of "
                             "the tests on test images and the churn table")
                memo[run_id] = None
        return memo[run_id]
    return load


def correct_by_seed(load: Callable[[str], pd.DataFrame | None], treatment: Mapping[int, str],
                    baseline: Mapping[int, str]) -> Correct:
    """seed -> the test images both of that seed's runs predicted, with whether each got it right; seeds whose
    predictions are not readable are left out. `treatment`, `baseline`: seed -> run_id."""
    paired = {}
    for seed in sorted(set(treatment) & set(baseline)):
        t, b = load(treatment[seed]), load(baseline[seed])
        if t is None or b is None:
            continue
        both = t.merge(b, on="test_index", suffixes=("_t", "_b"))
        paired[int(seed)] = pd.DataFrame({"test_index": both["test_index"],
                                          "treatment": both["prediction_t"] == both["label_t"],
                                          "baseline": both["prediction_b"] == both["label_b"]})
    return paired


def differences(correct: Correct) -> np.ndarray:
    """(seeds x images) treatment - baseline correctness on the test images every seed has, in seed order."""
    if not correct:
        return np.zeros((0, 0))
    common = sorted(set.intersection(*(set(frame["test_index"]) for frame in correct.values())))
    rows = []
    for seed in sorted(correct):
        frame = correct[seed].drop_duplicates("test_index").set_index("test_index").loc[common]
        rows.append(frame["treatment"].to_numpy(int) - frame["baseline"].to_numpy(int))
    return np.vstack(rows)


def correct_grid(load: Callable[[str], pd.DataFrame | None], runs: list[Mapping[int, str]]) -> np.ndarray:
    """correct[seed, k, image]: whether configuration k's run of that seed got the image right, over the seeds
    every configuration has readable predictions for and the test images all of those runs predicted."""
    frames: dict[int, list[pd.Series]] = {}
    for seed in sorted(set.intersection(*(set(r) for r in runs))) if runs else []:
        loaded = [load(r[seed]) for r in runs]
        if all(f is not None for f in loaded):
            frames[int(seed)] = [(f.drop_duplicates("test_index").set_index("test_index")["prediction"] ==
                                  f.drop_duplicates("test_index").set_index("test_index")["label"]) for f in loaded]
    if not frames:
        return np.zeros((0, len(runs), 0), int)
    common = sorted(set.intersection(*(set(s.index) for series in frames.values() for s in series)))
    return np.array([[s.loc[common].to_numpy(int) for s in series] for _, series in sorted(frames.items())])


def churn(correct: Correct) -> pd.DataFrame:
    """A row a seed: images, gains (treatment right, baseline wrong), losses (the reverse), net."""
    rows = [{"seed": seed, "images": len(f), "gains": int((f["treatment"] & ~f["baseline"]).sum()),
             "losses": int((~f["treatment"] & f["baseline"]).sum())} for seed, f in sorted(correct.items())]
    table = pd.DataFrame(rows, columns=["seed", "images", "gains", "losses"])
    return table.assign(net=table["gains"] - table["losses"])
