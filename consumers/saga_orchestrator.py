"""The demo's saga orchestrator: runs CreateOrder instances from ``saga.replies``.

Run it with ``pipeline process consumers.saga_orchestrator:processor`` (as many instances as
you like: they share the replies by partition and the deadlines by row lock). It uses the same
database as the order service, which starts the sagas.
"""

from __future__ import annotations

from consumers.order_saga import registry
from pipeline.sagas.orchestrator import SagaOrchestrator, orchestrator_processor

__all__ = ["orchestrator", "processor"]

orchestrator = SagaOrchestrator(registry)
processor = orchestrator_processor(orchestrator)
