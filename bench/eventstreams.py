"""Open SSE streams (`GET /v1/events`) held by the benchmark while it measures something else.

`EventStreams(port, key, count, after)` opens `count` streams from a thread of its own (one
asyncio loop, raw sockets: an HTTP client per stream would cost the machine more than the hub),
waits until each has its first line, and then only drains them, counting the events and
keep-alives that arrive. `after` is the `Last-Event-ID` to send: None starts at the newest event
(the stream gets every new one), an id beyond the newest parks the stream (nothing to send).
Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

OPEN_TIMEOUT = 30.0


class StreamError(Exception):
    """A stream could not be opened or was refused."""


@dataclass
class Drained:
    events: int = 0
    keepalives: int = 0
    bytes: int = 0


class EventStreams:
    def __init__(self, port: int, key: str, count: int, after: int | None = None) -> None:
        self.port, self.key, self.count, self.after = port, key, count, after
        self.drained = Drained()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="event-streams", daemon=True)
        self._writers: list[asyncio.StreamWriter] = []
        self._readers: list[asyncio.Task[None]] = []

    def __enter__(self) -> EventStreams:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._open_all(), self._loop).result(OPEN_TIMEOUT + 5)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._close_all(), self._loop).result(OPEN_TIMEOUT)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(OPEN_TIMEOUT)
        self._loop.close()

    async def _open_all(self) -> None:
        async with asyncio.timeout(OPEN_TIMEOUT):
            # a few at a time, as dashboards would connect, not one burst of `count` handshakes
            for start in range(0, self.count, 50):
                await asyncio.gather(*(self._open() for _ in range(start, min(start + 50, self.count))))

    async def _open(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._writers.append(writer)
        resume = f"Last-Event-ID: {self.after}\r\n" if self.after is not None else ""
        writer.write(
            f"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {self.key}\r\n"
            f"{resume}\r\n".encode()
        )
        head = b""
        while b"retry:" not in head:
            chunk = await reader.read(4096)
            if not chunk:
                raise StreamError(f"the hub closed an event stream: {head[:200]!r}")
            head += chunk
        if not head.startswith(b"HTTP/1.1 200"):
            raise StreamError(f"an event stream was refused: {head[:200]!r}")
        self._readers.append(asyncio.create_task(self._drain(reader)))

    async def _drain(self, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(65536):
            self.drained.bytes += len(chunk)
            self.drained.events += chunk.count(b"\nid: ") + chunk.startswith(b"id: ")
            self.drained.keepalives += chunk.count(b": keep-alive")

    async def _close_all(self) -> None:
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        for writer in self._writers:
            writer.close()
