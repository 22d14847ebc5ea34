"""Logging of every program: ECS JSON records to stderr and to the ``logs`` topic.

- :func:`configure_logging` sets it up for a program, once, at its entry point;
- :func:`log_context` attaches the ids of the event being handled to every record in a block;
- :class:`KafkaLogHandler` is the handler itself, for programs that assemble their own logging.

The log shipper (``consumers/log_shipper.py``, ``pipeline logs ship``) indexes the topic into
Elasticsearch; ``pipeline logs search`` queries it.
"""

from pipeline.logs.context import log_context
from pipeline.logs.handler import KafkaLogHandler
from pipeline.logs.setup import configure_logging

__all__ = ["KafkaLogHandler", "configure_logging", "log_context"]
