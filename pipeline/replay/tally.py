"""What the processes of a replay report back, added up in the parent: their progress as they
send, and what each acknowledged once done (one :class:`ReplaySummary`), also those stopped
by an error part way (worker.py's answers)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from pipeline.replay.replayer import ReplaySummary

__all__ = ["ReplayProgress", "ReplayTally"]


class ReplayProgress:
    """Adds up the processes' counts and hands ``on_progress`` what is new."""

    def __init__(self, counts: Any, on_progress: Callable[[int], None] | None) -> None:
        self._counts = counts
        self._on_progress = on_progress
        self._reported = 0

    def report(self) -> None:
        if self._on_progress is not None:
            done = sum(self._counts)
            if done > self._reported:
                self._on_progress(done - self._reported)
                self._reported = done


class ReplayTally:
    """What the processes answered after sending, added up."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.failed = 0
        self.first_failure: str | None = None
        self.errors: list[str] = []
        self.interrupted = False

    def add(self, index: int, answer: tuple[Any, ...]) -> None:
        kind = answer[0]
        if kind in ("sent", "interrupted", "failed", "stopped"):
            summary: ReplaySummary = answer[1]
            for name, count in summary.per_topic.items():
                self.sent[name] += count
        if kind == "interrupted":
            self.interrupted = True
        elif kind == "failed":
            self.failed += answer[2]
            self.first_failure = self.first_failure or answer[3]
        elif kind in ("error", "stopped"):
            self.errors.append(f"replay process {index}: {answer[-1]}")

    @property
    def queued(self) -> bool:
        """Whether any process had queued messages (its summary names their topics)."""
        return bool(self.sent)

    def summary(self, began: float) -> ReplaySummary:
        per_topic = dict(self.sent)
        return ReplaySummary(
            sent=sum(per_topic.values()), per_topic=per_topic, elapsed_s=time.monotonic() - began
        )
