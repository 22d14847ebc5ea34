"""A saga orchestrator for tests of its timeouts: one saga, ``Timed``, of one step with a short
timeout, its processor named by ``TIMED_ORCHESTRATOR_GROUP`` (each test its own consumer group)
and its topics in the namespace ``TIMED_SAGA_NAMESPACE`` (each test its own topics).

Run it with ``pipeline process tests.support.timed_saga_orchestrator:processor``.
"""

from __future__ import annotations

import os

from pydantic import BaseModel

from pipeline.sagas import Call, SagaDefinition, SagaRegistry, SagaTopics, Step
from pipeline.sagas.orchestrator import SagaOrchestrator, orchestrator_processor

#: The step's timeout, seconds.
TIMEOUT_S = 3.0


class Job(BaseModel):
    n: int


timed = SagaDefinition(
    "Timed",
    version=1,
    data_model=Job,
    steps=[
        Step(
            "only",
            participant="timed-worker",
            action=lambda job: Call("Do", {"n": job.n}),
            timeout_s=TIMEOUT_S,
        )
    ],
)
orchestrator = SagaOrchestrator(
    SagaRegistry([timed]), topics=SagaTopics(os.environ.get("TIMED_SAGA_NAMESPACE", "saga"))
)
processor = orchestrator_processor(
    orchestrator, name=os.environ.get("TIMED_ORCHESTRATOR_GROUP", "timed-saga-orchestrator")
)
