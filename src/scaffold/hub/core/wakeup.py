"""A wake-up call for coroutines waiting on something to happen, without polling.

Each waiter gets a future on its own event loop: an `asyncio.Event` binds to the first loop
that waits on it and refuses every later one (a test client runs each request on a new loop).
`notify` may come from any thread (the store calls it after each commit), so it hands the
wake-up to the waiter's loop instead of touching the future directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable


class Wakeup:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[asyncio.Future[None]] = set()

    def notify(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, set()
        wake(waiters)

    async def wait(self, timeout: float) -> None:
        """Return when notified, or after `timeout` seconds."""
        waiter = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiters.add(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiter, timeout)
        finally:
            with self._lock:
                self._waiters.discard(waiter)


def wake(waiters: Iterable[asyncio.Future[None]]) -> None:
    """Resolve each waiter on its own loop, from whichever thread this is called on."""
    try:
        current = asyncio.get_running_loop()
    except RuntimeError:
        current = None
    for waiter in waiters:
        loop = waiter.get_loop()
        if loop is current:
            _wake(waiter)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(_wake, waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
