"""The error of the envelope: a Kafka message that is not a valid event."""

from __future__ import annotations

from pipeline.errors import PipelineError

__all__ = ["EnvelopeError"]


class EnvelopeError(PipelineError, ValueError):
    """A Kafka message that is not a valid event; the message says exactly why."""

    # Its public name, which dead letters record as their error type
    # (pipeline.envelope.EnvelopeError), whichever module of the package defines it.
    __module__ = "pipeline.envelope"
