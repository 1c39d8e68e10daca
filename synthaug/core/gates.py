"""A documented hook for tests and demonstrations, unset in normal use: $SYNTHAUG_TRIAL_GATE names a folder
through which a test stops a sweep at a point it chose, whatever the machine's speed.

- Trials: each takes one ticket file (ticket-*, renamed to taken-<trial key>) before it trains, waiting
  (waiting-<trial key>) until there is one; a file fail-<trial key> makes that trial raise InjectedFault
  instead, every attempt, until the file is removed.
- Warm-up: while a file hold-warmup exists, each pool request a generator server is asked for during the
  warm-up waits (after touching warming), so an interrupt can be sent while the sweep warms its pools.

Workers get the variable from the driver.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

TRIAL_GATE = "SYNTHAUG_TRIAL_GATE"


class InjectedFault(RuntimeError):
    """Raised by a trial whose key has a fail-<key> file in the trial gate folder (tests, demonstrations)."""


def _folder() -> Path | None:
    folder = os.environ.get(TRIAL_GATE)
    return Path(folder) if folder else None


def pass_trial_gate(key: str) -> None:
    """Wait for and take a ticket (see above); nothing when the gate is unset."""
    folder = _folder()
    if folder is None:
        return
    if (folder / f"fail-{key}").exists():
        raise InjectedFault(f"trial {key}: a fail-{key} file in {TRIAL_GATE}")
    (folder / f"waiting-{key}").touch()
    while True:
        for ticket in sorted(folder.glob("ticket-*")):
            try:
                ticket.rename(folder / f"taken-{key}")      # atomic: one trial wins each ticket
                return
            except FileNotFoundError:                        # another trial took it first
                continue
        time.sleep(0.1)


def hold_warmup() -> None:
    """Wait while the gate folder holds hold-warmup (see above); nothing when the gate is unset."""
    folder = _folder()
    if folder is None or not (folder / "hold-warmup").exists():
        return
    (folder / "warming").touch()
    while (folder / "hold-warmup").exists():
        time.sleep(0.1)
