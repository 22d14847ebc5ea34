"""pipeline produce's input and its rejects file.

:class:`Input` is a file or stdin, read in large chunks (:func:`line_batches`) and, for
``--strict``, more than once; :class:`RejectsFile` is where rejected lines go, created at the
first rejection only and checked for writability before any line is sent.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pipeline.cli.checks import shown_path
from pipeline.cli.console import stderr_console
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from producers.ndjson import RejectedLine

__all__ = ["CHUNK_BYTES", "SHOWN", "Input", "RejectsFile", "default_rejects", "line_batches"]

#: How many rejections (and, in produce, delivery failures) are printed one by one (all are
#: counted).
SHOWN = 10

_err = stderr_console()


class Input:
    """A file, or stdin (``-``). A pipe (stdin, ``<(...)``) is kept in memory to be read twice."""

    def __init__(self, file: str) -> None:
        self.path = None if file == "-" else Path(file)
        try:
            exists = self.path is not None and self.path.exists()
        except PermissionError:
            raise  # said as any file the user may not read (pipeline.cli.main)
        except OSError as error:  # a name too long: exists() says False only when it is not
            raise PipelineError(f"cannot read {self.shown}: {error.strerror or error}") from None
        if self.path is not None and not exists:
            raise PipelineError(f"input {self.shown} does not exist")
        if self.path is not None and self.path.is_dir():
            raise PipelineError(f"input {self.shown} is a directory")
        if self.path is not None and not os.access(self.path, os.R_OK):  # said before connecting
            raise PipelineError(f"cannot read {self.shown}: permission denied")
        #: A regular file can be read more than once (counted, checked, then sent).
        self.regular = self.path is not None and self.path.is_file()
        #: The permissions a file made from this one (its rejects) may have: no more than its
        #: own (read and write bits), stdin's too when it is a file (``< private.ndjson``);
        #: None for a pipe or a terminal (the default then).
        self.mode: int | None = None
        if self.path is not None and self.regular:
            self.mode = stat.S_IMODE(self.path.stat().st_mode) & 0o666
        elif self.path is None:
            self.mode = _file_mode_of_stdin()
        self._kept: list[bytes] | None = None

    @property
    def shown(self) -> str:
        """The input's name in a message (escaped if it holds a control character)."""
        return "stdin" if self.path is None else shown_path(self.path)

    def is_the_file(self, other: Path) -> bool:
        """Whether ``other`` is this input (stdin's too): the same file or pipe by device and
        inode, whatever its name (a hard link, a symbolic link, ``/dev/stdin``). Not there
        (yet), or a device (``/dev/null``, a terminal): not the input."""
        try:
            theirs = os.stat(other)
            mine = os.stat(self.path) if self.path is not None else os.fstat(sys.stdin.fileno())
        except (OSError, ValueError):  # ValueError: stdin closed
            return False
        return not stat.S_ISCHR(theirs.st_mode) and (mine.st_dev, mine.st_ino) == (
            theirs.st_dev,
            theirs.st_ino,
        )

    def keep(self) -> None:
        """Read a pipe into memory now, so that :meth:`lines` can be read more than once."""
        if not self.regular and self._kept is None:
            with self.lines() as lines:
                self._kept = list(lines)

    @contextmanager
    def lines(self) -> Iterator[Iterable[bytes]]:
        if self._kept is not None:
            yield self._kept
        elif self.path is None:
            yield sys.stdin.buffer
        else:
            try:
                opened = self.path.open("rb")
            except OSError as error:
                raise PipelineError(f"cannot read {self.shown}: {error.strerror}") from None
            with opened:
                yield opened

    @contextmanager
    def batches(self) -> Iterator[Iterable[list[bytes]]]:
        """The lines (without their line break) in lists, read in large chunks: the same lines
        as :meth:`lines` gives, at a fraction of the cost per line."""
        if self._kept is not None:
            yield [self._kept]
            return
        with self.lines() as lines:
            stream: Any = lines
            read = getattr(stream, "read1", None)
            yield line_batches(read) if read is not None else ([line] for line in lines)

    def count_lines(self) -> int | None:
        """How many lines there are, when that can be known without consuming the input."""
        if self._kept is not None:
            return len(self._kept)
        if not self.regular:
            return None
        with self.lines() as lines:
            return sum(1 for _ in lines)


#: How much of the input is read at once; its lines make one batch.
CHUNK_BYTES = 1 << 20


def line_batches(read: Callable[[int], bytes]) -> Iterator[list[bytes]]:
    """The lines of a binary stream split on b"\\n" as iterating over it splits them, in lists.

    ``read1`` returns what one read gives (a pipe answers with what it has, so lines typed at a
    terminal are sent as they come).
    """
    rest = b""
    while chunk := read(CHUNK_BYTES):
        lines = (rest + chunk).split(b"\n") if rest else chunk.split(b"\n")
        rest = lines.pop()
        if lines:
            yield lines
    if rest:
        yield [rest]


def _file_mode_of_stdin() -> int | None:
    """stdin's read and write permission bits when it is a regular file, else ``None``."""
    try:
        found = os.fstat(sys.stdin.fileno())
    except (AttributeError, OSError, ValueError):  # closed, or not a real file (a test's)
        return None
    return stat.S_IMODE(found.st_mode) & 0o666 if stat.S_ISREG(found.st_mode) else None


def default_rejects(source: Input) -> Path:
    if source.path is None or not source.regular:
        return Path("produce-rejects.ndjson")
    return source.path.with_name(source.path.name + ".rejects.ndjson")


class RejectsFile:
    """The rejects file, created (or overwritten) at the first rejection only; with no more
    read and write permissions than ``mode`` (the input's: a private input's rejected lines are
    not made readable by others), when given."""

    def __init__(self, path: Path, mode: int | None = None) -> None:
        self.path = path
        self.mode = mode
        self.count = 0
        self._file: IO[str] | None = None
        self._failed = False

    def check(self) -> None:
        """A :class:`PipelineError` now, before any line is sent, when the file could not be
        written at the first rejection (its folder missing or not writable, itself not
        writable): a rerun after the fix would send the lines before it twice."""
        path = self.path
        try:
            is_dir = path.is_dir()
        except OSError as error:  # a name too long: is_dir() says False only when it is not
            raise self._cannot_write(error.strerror or str(error)) from None
        if is_dir:
            problem = "it is a directory"
        elif path.exists():
            problem = "" if os.access(path, os.W_OK) else "permission denied"
        elif not path.absolute().parent.is_dir():
            problem = f"no folder {path.absolute().parent}"
        else:
            writable = os.access(path.absolute().parent, os.W_OK | os.X_OK)
            problem = "" if writable else "permission denied"
        if problem:
            raise self._cannot_write(problem)

    def _cannot_write(self, reason: str) -> PipelineError:
        return PipelineError(f"cannot write the rejects file {self.shown}: {reason}")

    @property
    def shown(self) -> str:
        """The file's name in a message (escaped if it holds a control character)."""
        return shown_path(self.path)

    def _open(self) -> IO[str]:
        if self.mode is None:
            return self.path.open("w", encoding="utf-8", buffering=1)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, self.mode)
        # O_CREAT's mode is for a new file only: one that was there (an earlier run's, 0644)
        # loses what the input does not allow before the input's lines are written into it.
        kept = stat.S_IMODE(os.fstat(fd).st_mode)
        if kept & ~self.mode & 0o777:
            os.fchmod(fd, kept & (self.mode | ~0o666))
        return open(fd, "w", encoding="utf-8", buffering=1)

    def write(self, rejection: RejectedLine) -> None:
        line = json.dumps(rejection.as_json(), ensure_ascii=False) + "\n"
        try:
            if self._file is None:
                # Line-buffered: each rejection is in the file as it is made (and a full disk
                # stops the run at that line, not at the end).
                self._file = self._open()
            self._file.write(line)
        except OSError as error:
            self._failed = True
            raise self._cannot_write(error.strerror or str(error)) from None
        self.count += 1
        if self.count <= SHOWN:
            _err.print(f"[yellow]rejected[/yellow] line {rejection.line}: {rejection.reason}")
        elif self.count == SHOWN + 1:
            _err.print(
                f"(the first {SHOWN} rejected lines are shown; every one is in {self.shown})"
            )

    def close(self) -> None:
        if self._file is None:
            return
        try:
            self._file.close()
        except OSError as error:  # what was left to write: said once, at the write that failed
            if not self._failed:
                raise self._cannot_write(error.strerror or str(error)) from None
