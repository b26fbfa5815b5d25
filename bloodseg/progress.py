"""How far a long loop is, for logs read outside a terminal: ``k/N``, elapsed time and ETA.

Rich and tqdm bars redraw one line in place; under nohup, SLURM or CI that line is written
once, at the end, and ``train.log`` never sees it. Loops that matter (epochs, the tuning
grid) log a few plain lines instead, through Python logging, so they reach stdout and the
job's log file alike::

    eta = Eta(total=96)
    for k, item in enumerate(items, 1):
        ...
        if eta.due(k):
            log.info("tuning %s", eta.line(k))     # "tuning 10/96, 12 s, ETA 1.8 min"
"""

from __future__ import annotations

import time
from collections.abc import Callable


def duration(seconds: float) -> str:
    """``41 s``, ``6.5 min``, ``2 h 05 min``: what a reader of a log wants, not ``00:06:30``
    (clock formats read as min:s or h:min depending on the reader)."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 3600:
        minutes = seconds / 60
        return f"{minutes:.1f} min" if minutes < 10 else f"{minutes:.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


class Eta:
    """Progress of ``total`` steps of similar cost, started at construction.

    The ETA is the mean time per step so far times the steps left (no smoothing: the steps
    this is used for, epochs and grid tries, do not speed up).
    """

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = max(0, int(total))
        self.clock = clock
        self.start = clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def remaining(self, done: int) -> float | None:
        """Seconds left after ``done`` steps; None before the first step ends."""
        if done <= 0:
            return None
        return self.elapsed() / done * max(0, self.total - done)

    def line(self, done: int) -> str:
        """``10/96, 12 s, ETA 1.8 min`` (no ETA once done)."""
        text = f"{done}/{self.total}, {duration(self.elapsed())}"
        left = self.remaining(done)
        return text + (f", ETA {duration(left)}" if left else "")

    def due(self, done: int, lines: int = 10) -> bool:
        """Whether step ``done`` is one of about ``lines`` evenly spaced steps worth a log
        line: always the first and the last."""
        if done <= 1 or done >= self.total:
            return True
        return done * lines // self.total > (done - 1) * lines // self.total
