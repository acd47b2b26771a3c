"""A class's clock, pure: when it ends, how long is left, and an extension. Times are epoch
seconds; "HH:MM" is the instructor's local time today."""

from __future__ import annotations

import re
import time

from swarmlab.errors import SwarmlabError


class ClockError(SwarmlabError):
    exit_code = 2  # bad input, as a ConfigError


def parse_ends(text: str, now: float, source: str = "--ends") -> float:
    """`HH:MM` today, local time, as epoch seconds. A time that has passed is an error, not
    tomorrow: a typo must not give a class a day."""
    m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", text.strip())
    if not m:
        raise ClockError(f"{source} {text!r} is not a time of day: give HH:MM, e.g. 16:30")
    day = time.localtime(now)
    ends = time.mktime((day.tm_year, day.tm_mon, day.tm_mday, int(m[1]), int(m[2]), 0, 0, 0, -1))
    if ends <= now:
        raise ClockError(f"{source} {text} has passed (it is {time.strftime('%H:%M', day)}): give a later time")
    return ends


def extended(ends: float | None, minutes: int, now: float) -> float:
    """The end moved `minutes` later; a class that has ended, or has no end, gets them from now."""
    return max(ends or now, now) + minutes * 60


def ended_now(ends: float | None, now: float) -> float:
    """The end brought to now; a class that has ended already keeps its own end."""
    return ends if ends is not None and ends <= now else now


def left(ends: float | None, now: float) -> float | None:
    """Seconds left (0 once over), or None for a class without an end."""
    return None if ends is None else max(0.0, ends - now)


def over(ends: float | None, now: float) -> bool:
    return ends is not None and now >= ends


def say_left(ends: float | None, now: float) -> str:
    """"ends at 16:30 (42 min left)", "ended at 16:30", or "" without an end."""
    if ends is None:
        return ""
    at = time.strftime("%H:%M", time.localtime(ends))
    if over(ends, now):
        return f"ended at {at}"
    minutes = int(left(ends, now) // 60)
    return f"ends at {at} ({f'{minutes // 60} h {minutes % 60} min' if minutes >= 60 else f'{minutes} min'} left)"
