"""The one deadline loop: polls that end when true, at the deadline, or at Ctrl-C."""

import time

import pytest

from swarmlab.errors import SwarmlabError
from swarmlab.waiting import Cancelled, cancelled, poll_until, rounds


def test_rounds_come_an_interval_apart_until_the_deadline():
    began = time.monotonic()
    starts = list(rounds(began + 0.25, 0.1))
    assert 2 <= len(starts) <= 3 and starts[-1] < began + 0.25  # none starts after the deadline
    assert all(b - a >= 0.09 for a, b in zip(starts, starts[1:])), starts  # no round comes early


def test_a_watch_that_saw_what_it_waited_for_ends_at_once():
    seen = []
    for at in rounds(time.monotonic() + 5, 0.05):
        seen.append(at)
        if len(seen) == 2:
            break
    assert len(seen) == 2 and time.monotonic() - seen[0] < 1


def test_ctrl_c_ends_a_watch_and_a_poll():
    cancelled.set()
    try:
        with pytest.raises(Cancelled):
            next(rounds(time.monotonic() + 5, 1))
        with pytest.raises(Cancelled):
            poll_until(lambda: False, 5, 1, lambda: SwarmlabError("timed out"))
    finally:
        cancelled.clear()


def test_a_poll_returns_the_first_true_answer_or_raises_at_the_deadline():
    answers = iter([None, 0, "ready"])
    assert poll_until(lambda: next(answers), 5, 0.01, lambda: SwarmlabError("timed out")) == "ready"
    with pytest.raises(SwarmlabError, match="timed out"):
        poll_until(lambda: False, 0.05, 0.01, lambda: SwarmlabError("timed out"))
