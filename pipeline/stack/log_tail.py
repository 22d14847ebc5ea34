"""The end of a component's log: what ``stack logs`` shows, and the lines a failed start quotes
as its cause (only what this start wrote: the log is appended to, run after run)."""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["cause_lines", "log_size", "tail"]

#: How much of a log's end is read.
_READ_BYTES = 64 * 1024
#: A frame of a Java stack trace, or its "... 12 more".
_JAVA_FRAME = re.compile(r"\s*(at [\w$.<>/]+\(|\.\.\. \d+ more$)")


def tail(path: Path, lines: int, *, since: int = 0) -> list[str]:
    """The last ``lines`` lines of ``path`` (of what it holds past byte ``since``)."""
    if not path.exists():
        return []
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(since, size - _READ_BYTES))
        text = handle.read().decode("utf-8", errors="replace")
    return text.splitlines()[-lines:]


def log_size(path: Path) -> int:
    """The log's size now (0 when there is none yet): where a start's own lines begin."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def cause_lines(path: Path, since: int = 0) -> str:
    """The last 5 lines written past byte ``since`` that are not frames of a Java stack trace:
    Elasticsearch's cause ("Invalid initial heap size: -Xms1gb") came a dozen lines above its
    last five, which were all "at org.elasticsearch...". A start quoted the lines of the run
    before it when its own had written nothing yet."""
    said = [line.strip() for line in tail(path, 200, since=since) if not _JAVA_FRAME.match(line)]
    return " | ".join(said[-5:]) or ("(nothing written yet)" if since else "(empty)")
