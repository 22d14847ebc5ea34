"""The NDJSON producer's defaults, apart so that a command line can show them in its help
without importing the producer (the envelope's models, the Kafka client)."""

from __future__ import annotations

#: The CloudEvents type of an event when the line names no request type.
DEFAULT_EVENT_TYPE = "com.example.event"
#: The CloudEvents source of every event (a URI-reference).
DEFAULT_SOURCE = "/pipeline/cli"
