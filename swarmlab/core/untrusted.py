"""Text that comes from a node, where a student is root: read strictly, so that nothing they
write can stop a class operation, break a page's JSON or drive the instructor's terminal."""

from __future__ import annotations

import re

# C0 and C1 controls but tab, and DEL: an escape sequence would move the instructor's cursor,
# retitle their terminal or hide a line.
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_EPOCH = re.compile(r"[0-9]{1,10}(\.[0-9]{1,6})?")  # ASCII only: str.isdigit() takes '²'


def printable(text: str) -> str:
    """The text with every control character (tab aside) shown as U+FFFD."""
    return _CONTROLS.sub("\ufffd", text)


def epoch(text: str, latest: float) -> float | None:
    """Seconds since the epoch, written as plain ASCII digits; None for anything else. A time
    later than `latest` (a clock far ahead, or a forgery) is taken as `latest`."""
    if not _EPOCH.fullmatch(text):
        return None
    return min(float(text), latest)
