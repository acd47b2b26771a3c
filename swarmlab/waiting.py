"""Waiting for something outside to become true: one deadline loop for every wait."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, TypeVar

from swarmlab.errors import SwarmlabError

T = TypeVar("T")

# Set on Ctrl-C, so that waits in worker threads (which get no KeyboardInterrupt) stop at once.
cancelled = threading.Event()


class Cancelled(SwarmlabError):
    exit_code = 130


def poll_until(check: Callable[[], T], timeout: float, interval: float,
               on_timeout: Callable[[], SwarmlabError]) -> T:
    """Calls check() every `interval` seconds until it returns something true, and returns that.
    Raises on_timeout() after `timeout` seconds, or Cancelled after Ctrl-C."""
    deadline = time.monotonic() + timeout
    while True:
        if cancelled.is_set():
            raise Cancelled("interrupted")
        started = time.monotonic()
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise on_timeout()
        time.sleep(max(0.0, min(interval - (time.monotonic() - started), deadline - time.monotonic())))


def rounds(deadline: float, interval: float) -> Iterator[float]:
    """The start (monotonic) of each round of a watch that records what it sees, `interval`
    seconds apart, until `deadline`: the caller breaks out once it has seen what it waits for,
    and notes what it missed when the rounds run out. Raises Cancelled after Ctrl-C."""
    while time.monotonic() < deadline:
        if cancelled.is_set():
            raise Cancelled("interrupted")
        started = time.monotonic()
        yield started
        time.sleep(max(0.0, min(interval - (time.monotonic() - started), deadline - time.monotonic())))


def run_together(work: Callable[[Any], T], items: Iterable[Any]) -> list[Future]:
    """work(item) for every item at once, each in its own thread; returns the finished futures
    in item order. Ctrl-C (which only the main thread receives) sets `cancelled`, waits for the
    workers to notice, and is raised again."""
    items = list(items)
    pool = ThreadPoolExecutor(max_workers=max(1, len(items)))
    futures = [pool.submit(work, item) for item in items]
    try:
        for f in futures:
            while not f.done():
                time.sleep(0.1)  # wake up for Ctrl-C
    except KeyboardInterrupt:
        cancelled.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return futures
