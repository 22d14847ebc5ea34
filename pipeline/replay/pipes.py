"""The parent's side of a replay's processes: the pipe to each and the batches of lines it is
sent (:class:`ChildPipes`), on pipes made larger (:func:`widen`)."""

from __future__ import annotations

import contextlib
import fcntl
from multiprocessing.connection import Connection

from pipeline.replay.worker import LINES_KEPT, encode_batch

__all__ = ["ChildPipes", "widen"]


class ChildPipes:
    """The parent's side of one process: its two pipe ends, the batch being filled for it,
    and how much of what it was sent it keeps."""

    def __init__(self, to_child: Connection, from_child: Connection, keep_bytes: int) -> None:
        self.to_child = to_child
        self.from_child = from_child
        self.numbers: list[int] = []
        self.lines: list[bytes] = []
        self.size = 0
        #: Where the batch being filled begins: line number and byte offset.
        self.start = (0, 0)
        self.kept_bytes = 0
        self._keep_bytes = keep_bytes  # the most it keeps
        #: The first line it was sent but not told to keep (None: it keeps all).
        self.first_not_kept: int | None = None
        self.gone = False

    def flush(self, word: bytes) -> None:
        if self.numbers:
            data = encode_batch(word, self.numbers, self.lines)
            self.numbers, self.lines, self.size = [], [], 0
            self.tell(data)

    def flush_to_keep(self) -> tuple[int, int] | None:
        """Send the batch to be kept while there is room; past it, drop the batch (it is read
        again when sending) and say where it begins, the first time."""
        if not self.numbers:
            return None
        if self.first_not_kept is None and self.kept_bytes + self.size <= self._keep_bytes:
            self.kept_bytes += self.size
            self.flush(LINES_KEPT)
            return None
        start: tuple[int, int] | None = None
        if self.first_not_kept is None:
            self.first_not_kept = self.start[0]
            start = self.start
        self.numbers, self.lines, self.size = [], [], 0
        return start

    def tell(self, data: bytes) -> None:
        if self.gone:
            return
        try:
            self.to_child.send_bytes(data)
        except OSError:  # it ended; its answer (or its absence) says why
            self.gone = True


_PIPE_BYTES = 1024 * 1024


def widen(conn: Connection) -> None:
    """A larger pipe (Linux), so the parent seldom waits for a busy process."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        # Where the system's limit is lower, the default size works, a little slower.
        with contextlib.suppress(OSError):
            fcntl.fcntl(conn.fileno(), set_size, _PIPE_BYTES)
