"""Event-streaming backbone for Python services on Apache Kafka."""

from pipeline.envelope import EnvelopeError, Event, KafkaMessage, decode, encode
from pipeline.ids import new_event_id
from pipeline.settings import PipelineSettings

__all__ = [
    "EnvelopeError",
    "Event",
    "KafkaMessage",
    "PipelineSettings",
    "decode",
    "encode",
    "new_event_id",
]
