"""Which golden files a test session checked with ``--update-golden``, and what the first check
of each gave: a file checked again in the session is compared with that, never overwritten.

- :class:`LocalGoldenSession`: the session is this process (a plain pytest run);
- :class:`SharedGoldenSession`: the session is several processes (pytest-xdist's workers),
  which share a folder: one file in it per golden file checked, created whole and only once,
  so two workers cannot both check a file first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = ["FirstCheck", "GoldenSession", "LocalGoldenSession", "SharedGoldenSession"]


@dataclass(frozen=True)
class FirstCheck:
    """The session's first check of a golden file: the test that made it, and the file's text
    it gave (written, or found as it was)."""

    test: str
    text: str


class GoldenSession(Protocol):
    """The golden files checked in one test session so far."""

    def first_check(self, path: Path, test: str, text: str) -> FirstCheck | None:
        """None when this is the session's first check of ``path`` (it is recorded as such:
        the caller writes the file); else that first check."""
        ...


class LocalGoldenSession:
    """The golden files checked in this session, in this process."""

    def __init__(self) -> None:
        self._first: dict[Path, FirstCheck] = {}

    def first_check(self, path: Path, test: str, text: str) -> FirstCheck | None:
        """See :meth:`GoldenSession.first_check`."""
        key = path.resolve()
        first = self._first.get(key)
        if first is None:
            self._first[key] = FirstCheck(test, text)
        return first


class SharedGoldenSession:
    """The golden files checked in a session of several processes that share ``folder``
    (which exists, and is removed by whoever made it once the session ends)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def first_check(self, path: Path, test: str, text: str) -> FirstCheck | None:
        """See :meth:`GoldenSession.first_check`; atomic across the processes."""
        key = path.resolve()
        entry = self.folder / f"{hashlib.sha256(str(key).encode('utf-8')).hexdigest()}.json"
        record = json.dumps({"path": str(key), "test": test, "text": text})
        # Written whole under a name of its own, then linked to the entry's name: like O_EXCL,
        # the link fails when the entry exists (another process checked the file first), and
        # unlike a file created and then written, no process ever reads it half written.
        handle, written = tempfile.mkstemp(dir=self.folder, prefix=".check-", suffix=".json")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(record)
            try:
                os.link(written, entry)
            except FileExistsError:
                first = json.loads(entry.read_text(encoding="utf-8"))
                return FirstCheck(str(first["test"]), str(first["text"]))
            return None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(written)
