"""What Tune left of a sweep on its storage, read before the sweep resumes.

Tune writes tuner.pkl when the Tuner is made; its snapshot of the trials (experiment_state-<session>.json) and of
the trial generator's place in the grid (basic-variant-state-<session>.json) reach the storage later, uploaded in
the background. A kill between the two leaves tuner.pkl without a snapshot. Tuner.can_restore asks only for
tuner.pkl, and Tuner.restore then fails inside Tune, which logs "Failed to restore the run state" and goes on
with a single trial of an empty configuration (the param space is not in tuner.pkl): a sweep that trains the base
configuration under no seed. snapshot_state tells the three cases apart, so that such a sweep starts its trials
again instead (a trial whose MLflow run finished reports that run's result and trains nothing).

Imports nothing of synthaug.
"""

from __future__ import annotations

import fnmatch

NONE, PARTIAL, COMPLETE = "none", "partial", "complete"


def snapshot_state(sweep_dir: str) -> str:
    """NONE: no Tuner was ever made there. COMPLETE: the newest snapshot of the trials is there with its grid
    state, all Tuner.restore reads. PARTIAL: tuner.pkl without them (killed before Tune's first upload ended).
    The file names are Tune's own templates, so a Ray that renames them cannot pass unnoticed."""
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.impl.tuner_internal import _TUNER_PKL
    from ray.tune.search.basic_variant import BasicVariantGenerator

    names = _names(sweep_dir)
    if _TUNER_PKL not in names:
        return NONE
    snapshots = fnmatch.filter(names, TuneController.CKPT_FILE_TMPL.format("*"))
    if not snapshots:
        return PARTIAL
    prefix, suffix = TuneController.CKPT_FILE_TMPL.split("{}")
    session = max(snapshots)[len(prefix):-len(suffix)]          # the newest: the one Tune restores
    return COMPLETE if BasicVariantGenerator.CKPT_FILE_TMPL.format(session) in names else PARTIAL


def _names(sweep_dir: str) -> set[str]:
    """The file names directly in `sweep_dir` (an absolute folder or a pyarrow file system URI); none if it is
    missing."""
    import pyarrow.fs as pafs

    filesystem, path = pafs.FileSystem.from_uri(sweep_dir)
    infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return {info.base_name for info in infos if info.type == pafs.FileType.File}
