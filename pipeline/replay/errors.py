"""What a replay refuses: :class:`RecordingError`."""

from __future__ import annotations

from pipeline.errors import PipelineError

__all__ = ["RecordingError"]


class RecordingError(PipelineError):
    """A line that is not a recorded message; the message says which line and why."""
