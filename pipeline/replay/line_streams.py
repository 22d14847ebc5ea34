"""A recording's lines read from a file or a pipe: at most so long (:func:`bounded_lines`), or
up to a place in the file (:func:`within`), split in C by a buffered reader.
"""

from __future__ import annotations

import io
from typing import IO, Any

from pipeline.replay.errors import RecordingError

__all__ = ["MAX_LINE_BYTES", "bounded_lines", "within"]


#: The longest line a recording may have: a message of 190 MiB, its value in base64, fits.
#: Without a bound, a file that is no recording (a disk image, /dev/zero) was read whole in
#: search of its first line break, until the kernel killed the process for its memory.
MAX_LINE_BYTES = 256 << 20


def bounded_lines(raw: IO[bytes], source: str, limit: int = MAX_LINE_BYTES) -> IO[bytes]:
    """``raw`` (unbuffered, or one whose ``read1`` returns what is there) as a buffered stream
    to iterate by lines, which raises :class:`RecordingError` naming ``source`` at a line
    longer than ``limit`` bytes. The lines are split in C as before; the bound is checked once
    per read of the buffer (1 MiB), not per line."""
    return io.BufferedReader(_LineBound(raw, source, limit), buffer_size=1 << 20)


class _LineBound(io.RawIOBase):
    """``raw``'s bytes, with the run since the last line break counted as they are read."""

    def __init__(self, raw: IO[bytes], source: str, limit: int) -> None:
        super().__init__()
        self._raw = raw
        # What is there now, not a full buffer's worth: a line that came down a pipe is read
        # at once (a buffered stream's read would wait for a whole buffer, or the end).
        self._read = getattr(raw, "read1", None) or raw.read
        self._source = source
        self._limit = limit
        self._run = 0  # bytes since the last line break

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._raw.seekable()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._run = 0  # a replay seeks to the start of a line
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def fileno(self) -> int:  # a replay by timestamps reads lines where they are (os.pread)
        return self._raw.fileno()

    def close(self) -> None:
        self._raw.close()
        super().close()

    def readinto(self, buffer: Any) -> int:
        data = self._read(len(buffer))
        if not data:
            return 0
        count = len(data)
        buffer[:count] = data
        last = data.rfind(b"\n")
        run = self._run + (count if last < 0 else data.find(b"\n"))
        if run > self._limit:
            raise RecordingError(
                f"{self._source}: a line longer than {self._limit:,} bytes: not a recording, "
                "which has one message a line"
            )
        self._run = run if last < 0 else count - last - 1
        return count


def within(stream: IO[bytes], size: int) -> IO[bytes]:
    """The next ``size`` bytes of ``stream``, to iterate by lines; a line that goes past them is
    cut there (it was read so far when it was checked: a line being written).

    A buffered reader (1 MiB reads) over :class:`_Prefix`: the lines are split in C and the
    limit counted per read, as fast as reading the file itself (measured); a generator that
    counted per line cost ~45 ns a line more on the send path.
    """
    return io.BufferedReader(_Prefix(stream, size), buffer_size=1 << 20)


class _Prefix(io.RawIOBase):
    """At most ``size`` bytes of ``stream``, read from where it is."""

    def __init__(self, stream: IO[bytes], size: int) -> None:
        super().__init__()
        self._stream = stream
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            return 0
        with memoryview(buffer) as view:
            count = self._stream.readinto(view[: self._left])  # type: ignore[attr-defined]
        self._left -= count or 0
        return count or 0
