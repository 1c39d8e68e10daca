"""Progress of a long step as lines a log can hold: what it is, n/N, the rate, an ETA.

A terminal's progress bar rewrites one line with carriage returns; in a log file, or from a Ray worker
(whose output reaches the driver a whole line at a time), that is one line only when the bar closes, or a
line of spaces. A step that takes longer than about ten seconds says instead, at its start and then at
most every `every_s` seconds, and at its end:

    training generator ddpm-cond (ddpm-cond-1a2b...): 1200/5000 steps, 3.1 steps/s, ETA 0:20:26
"""

from __future__ import annotations

import time
from datetime import timedelta

EVERY_S = 20.0          # a progress line at most this often


class Progress:
    """Lines for one step of `total` units: `what` names the step and its subject (which generator, which
    pool), so lines of steps side by side tell themselves apart."""

    def __init__(self, what: str, total: int, unit: str, every_s: float = EVERY_S):
        self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
        self.first: tuple[int, float] | None = None     # (done, time) at the first update: the rate's origin
        self.said = 0.0

    def update(self, done: int, note: str = "") -> None:
        """`done` of total units are done (the first call says where the step starts, the last its end)."""
        now = time.monotonic()
        if self.first is None:
            self.first = (done, now)
        elif done < self.total and now - self.said < self.every_s:
            return
        self.said = now
        print(self.line(done, now) + (f"; {note}" if note else ""), flush=True)

    def line(self, done: int, now: float) -> str:
        text = f"{self.what}: {done}/{self.total} {self.unit}"
        start_done, start = self.first or (done, now)
        seconds = now - start
        if done > start_done and seconds > 0:
            rate = (done - start_done) / seconds
            text += f", {rate:.3g} {self.unit}/s"
            if done < self.total:
                text += f", ETA {timedelta(seconds=round((self.total - done) / rate))}"
            else:
                text += f", {timedelta(seconds=round(seconds))} in all"
        return text
