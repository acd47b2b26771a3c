"""The check retry policy: verdicts read again until they stand (two passing readings in a
row) or each failing check's own timeout is over. Pure but for the injected clock and sleep."""

from __future__ import annotations

import time
from typing import Callable

from swarmlab.core.checks import Verdict


def still_waiting_for(failing: list[int], passed_before: bool, elapsed: float, timeouts: list[float],
                      wait: bool = True) -> list[int] | None:
    """The retry policy of a check: None when the verdicts stand, else the failing checks whose
    own timeout is not over yet (empty: all pass, read them once more). All must pass on two
    readings in a row, so that a crash-looping task caught while it runs does not pass."""
    if not wait or (not failing and passed_before):
        return None
    open_ = [i for i in failing if elapsed < timeouts[i]]
    if failing and not open_:
        return None
    return open_


def settle(read: Callable[[], list[Verdict]], timeouts: list[float], wait: bool = True, every: float = 2,
           progress: Callable[[str], None] = lambda _m: None,
           clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> list[Verdict]:
    """Verdicts read again and again until still_waiting_for says they stand; what is still
    awaited is shown when it changes, and every 15 s. The clock and the sleep are injected so
    that the loop is tested without waiting."""
    started = clock()
    last_shown, shown_at, passed_before = "", 0.0, False
    while True:
        verdicts = read()
        failing = [i for i, v in enumerate(verdicts) if not v.ok]
        elapsed = clock() - started
        open_ = still_waiting_for(failing, passed_before, elapsed, timeouts, wait)
        if open_ is None:
            return verdicts
        passed_before = not failing
        waiting_for = ", ".join(verdicts[i].title for i in open_) or "the same result once more"
        if waiting_for != last_shown or elapsed - shown_at >= 15:
            progress(f"waiting for: {waiting_for} ({elapsed:.0f} s)")
            last_shown, shown_at = waiting_for, elapsed
        sleep(every)
