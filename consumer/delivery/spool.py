"""An import being packed, its bytes in a file beside the store: memory that does not
grow with the import.

A 200 MB import held in memory cost 200 MB for its customers' bytes, and as
much again for the body joined from them (the service peaked at 726 MiB). Its
customers' bytes now go to an unnamed file in the store's directory (the
store's volume: ``/tmp`` is small in ``deploy/``), written as they are packed,
each after a comma, so that any run of consecutive customers (an import, a
half after a 416) is one range of the file; the request streams that range a
slice at a time (:class:`consumer.delivery.http.body.SlicedBody`). What the
file holds is in the page cache, not in the process. Small imports (under
``IN_MEMORY_BYTES``: the live stream's) stay in memory, as before.

The file is unnamed (``O_TMPFILE``): it goes with the process, whatever ends it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["IN_MEMORY_BYTES", "ImportBody", "Spool", "SpooledPart"]

IN_MEMORY_BYTES = 4 << 20  # an import this small stays in memory
SLICE = 1 << 20


@dataclass(frozen=True, slots=True)
class SpooledPart:
    """A customer of the import being packed: where its bytes are, what it carries."""

    offset: int  # in the spool; -1: in ``body``
    size: int
    staged: tuple[int, int]  # its rows in import_staged
    documents: int
    body: bytes = b""  # while the import is small enough to stay in memory


class Spool:
    """The bytes of one import: appended while it is packed (a MiB written at a time),
    read while it is sent."""

    def __init__(self, directory: Path | None) -> None:
        self._directory = directory
        self._file: int | None = None
        self.size = 0
        self._buffer = bytearray()  # the last bytes appended, not written yet

    def _fd(self) -> int:
        if self._file is None:
            with tempfile.TemporaryFile(dir=self._directory) as handle:
                self._file = os.dup(handle.fileno())
        return self._file

    def append(self, data: bytes, *, separated: bool) -> int:
        """A customer's bytes (after a comma, unless it is the import's first); returns
        where they start."""
        if separated:
            self._buffer += b","
        offset = self.size + len(self._buffer)
        self._buffer += data
        if len(self._buffer) >= SLICE:
            self._write()
        return offset

    def _write(self) -> None:
        fd = self._fd()
        view = memoryview(self._buffer)
        while view:
            written = os.pwrite(fd, view, self.size)
            view = view[written:]
            self.size += written
        view.release()
        self._buffer.clear()

    def read(self, offset: int, size: int) -> bytes:
        if self._buffer:
            self._write()
        return os.pread(self._fd(), size, offset)

    def slices(self, offset: int, size: int, slice_bytes: int = SLICE) -> Iterator[bytes]:
        if self._buffer:
            self._write()
        end = offset + size
        while offset < end:
            chunk = os.pread(self._fd(), min(slice_bytes, end - offset), offset)
            if not chunk:
                raise OSError(f"the import's spool ended at {offset} of {end} bytes")
            offset += len(chunk)
            yield chunk

    def close(self) -> None:
        """The file goes, and its pages with it."""
        if self._file is not None:
            os.close(self._file)
            self._file = None
        self.size = 0
        self._buffer.clear()


class ImportBody:
    """An ``/import`` body: the envelope around consecutive customers, read from the
    spool (or memory) a slice at a time each time the request is sent."""

    def __init__(
        self, spool: Spool, parts: Sequence[SpooledPart], head: bytes, tail: bytes
    ) -> None:
        self._spool = spool
        self._head, self._tail = head, tail
        self._pieces: list[bytes | tuple[int, int]] = []
        if parts and parts[0].offset >= 0:
            start = parts[0].offset
            last = parts[-1]
            self._pieces.append((start, last.offset + last.size - start))
        else:
            for index, part in enumerate(parts):
                if index:
                    self._pieces.append(b",")
                self._pieces.append(part.body if part.offset < 0 else (part.offset, part.size))
        self._size = len(head) + len(tail)
        self._size += sum(p[1] if isinstance(p, tuple) else len(p) for p in self._pieces)

    def __len__(self) -> int:
        return self._size

    def slices(self, slice_bytes: int = SLICE) -> Iterator[bytes | memoryview]:
        yield self._head
        for piece in self._pieces:
            if isinstance(piece, tuple):
                yield from self._spool.slices(*piece, slice_bytes=slice_bytes)
            else:
                view = memoryview(piece)
                for start in range(0, len(view), slice_bytes):
                    yield view[start : start + slice_bytes]
        yield self._tail

    def read_all(self) -> bytes:
        """The whole body (a stand-in API's; the client streams it)."""
        return b"".join(bytes(s) for s in self.slices())
