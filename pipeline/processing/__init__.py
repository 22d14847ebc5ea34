"""Stream processing: key-ordered, concurrent, idempotent handlers with retries and dead letters.

Declare handlers on a :class:`Processor`, test them with :class:`ProcessorTestDriver`, run them
with ``pipeline process MODULE:PROCESSOR`` (Faust, see pipeline/processing/faust/app.py).
"""

from pipeline.processing.driver import ProcessorTestDriver
from pipeline.processing.processor import NotYet, Processor, Reject, UnitOfWork
from pipeline.processing.records import Record

__all__ = ["NotYet", "Processor", "ProcessorTestDriver", "Record", "Reject", "UnitOfWork"]
