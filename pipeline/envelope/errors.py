"""The error of the envelope: a Kafka message that is not a valid event."""

from __future__ import annotations

from pipeline.errors import PipelineError

__all__ = ["EnvelopeError"]


class EnvelopeError(PipelineError, ValueError):
    """A Kafka message that is not a valid event; the message says exactly why."""
