"""A request body as it goes on the wire: bytes, or a stream read a slice at a time,
written a MiB at a time; and whether one is being written (:class:`Uploads`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Protocol

import aiohttp
import aiohttp.abc
import aiohttp.payload

__all__ = ["Body", "SlicedBody", "StreamedBody", "Uploads"]


class StreamedBody(Protocol):
    """A body too large to hold: its size, and its bytes a slice at a time (each call
    reads it again from the start: a retry sends it whole again)."""

    def __len__(self) -> int: ...

    def slices(self, slice_bytes: int = ...) -> Iterator[bytes | memoryview]: ...


Body = bytes | StreamedBody


class Uploads:
    """Whether a request body is being written. Long steps of the service's loop (an
    import's settling) wait while one is: a body goes out a slice per turn of the
    loop, and beside the settling of a 200 MB import, whose pages each hold the loop
    for a fraction of a second, a 66 MB import took 5 s to upload instead of a
    fraction of one, all of it before the API could read it (bench/README.md).

    Not while the API reads nothing of it, though: a body that took no slice for
    ``STALLED_SECONDS`` waits on the API (busy with the import before it), and a
    page of settling then costs the upload nothing (the next slice waits at most
    that page, once the API reads again)."""

    STALLED_SECONDS = 0.25

    def __init__(self) -> None:
        self._writing = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._moved = 0.0  # monotonic: when a body being written last gave a slice

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        self._writing += 1
        self._idle.clear()
        self.moved()
        try:
            yield
        finally:
            self._writing -= 1
            if not self._writing:
                self._idle.set()

    def moved(self) -> None:
        """A slice of a body being written was taken by the socket."""
        self._moved = time.monotonic()

    async def idle(self) -> None:
        """Return once no body is being written, or none moved for ``STALLED_SECONDS``."""
        while not self._idle.is_set():
            still = self.STALLED_SECONDS - (time.monotonic() - self._moved)
            if still <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), still)


class SlicedBody(aiohttp.payload.Payload):
    """A request body written a MiB at a time, each slice once the socket took the last.

    Handed whole, what the socket does not take at once is copied by asyncio's
    transport (twice, on Python 3.11), and ``io.BytesIO`` copies it when aiohttp
    measures it: a 200 MB import cost 200 to 400 MB more. Slices of a memoryview
    copy nothing, and a :class:`StreamedBody` is read a slice at a time; the size
    is known, so the request has its Content-Length."""

    SLICE = 1 << 20

    def __init__(self, body: Body, uploads: Uploads | None = None) -> None:
        super().__init__(body, content_type="application/json")
        self._body = body
        self._size = self._length = len(body)
        self._uploads = uploads or Uploads()

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return b"".join(self._slices()).decode(encoding, errors)

    def _slices(self) -> Iterator[bytes | memoryview]:
        body = self._body
        if isinstance(body, bytes):
            view = memoryview(body)
            return (view[start : start + self.SLICE] for start in range(0, len(view), self.SLICE))
        return body.slices(self.SLICE)

    async def write(self, writer: aiohttp.abc.AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: aiohttp.abc.AbstractStreamWriter, content_length: int | None
    ) -> None:
        left = self._length if content_length is None else content_length
        with self._uploads.writing():
            for piece in self._slices():
                if left <= 0:
                    break
                piece = piece[:left]
                left -= len(piece)
                await writer.write(piece)
                self._uploads.moved()
