"""Event-streaming backbone for Python services on Apache Kafka.

The names below are imported on first use (PEP 562), so importing any part of the package, as
``pipeline --help`` does, does not load the envelope's models or the settings.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.envelope import EnvelopeError, Event, KafkaMessage, decode, encode
    from pipeline.ids import new_event_id
    from pipeline.settings import PipelineSettings

#: Each public name and the module it comes from.
_MODULES = {
    "EnvelopeError": "pipeline.envelope",
    "Event": "pipeline.envelope",
    "KafkaMessage": "pipeline.envelope",
    "decode": "pipeline.envelope",
    "encode": "pipeline.envelope",
    "new_event_id": "pipeline.ids",
    "PipelineSettings": "pipeline.settings",
}

__all__ = [
    "EnvelopeError",
    "Event",
    "KafkaMessage",
    "PipelineSettings",
    "decode",
    "encode",
    "new_event_id",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":  # the installed distribution's, as `pipeline --version` says
        from importlib import metadata

        return metadata.version("event-pipeline")
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups do not come here
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
