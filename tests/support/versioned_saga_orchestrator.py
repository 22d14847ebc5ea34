"""A saga orchestrator for tests of a rolling deploy: the saga ``Rolled`` in two versions, each
one step with a short timeout. ``VERSIONED_ORCHESTRATOR_VERSIONS`` says which versions its
registry holds (``1``: the old code; ``1,2``: the new), ``VERSIONED_ORCHESTRATOR_GROUP`` its
consumer group and ``VERSIONED_SAGA_NAMESPACE`` its topics (each test its own).

Run it with ``pipeline process tests.support.versioned_saga_orchestrator:processor``.
"""

from __future__ import annotations

import os

from pydantic import BaseModel

from pipeline.sagas import Call, SagaDefinition, SagaRegistry, SagaTopics, Step
from pipeline.sagas.orchestrator import SagaOrchestrator, orchestrator_processor

#: The step's timeout, seconds.
TIMEOUT_S = 8.0


class Job(BaseModel):
    n: int


def _rolled(version: int) -> SagaDefinition[Job]:
    return SagaDefinition(
        "Rolled",
        version=version,
        data_model=Job,
        steps=[
            Step(
                f"do-v{version}",
                participant="rolled-worker",
                action=lambda job: Call("Do", {"n": job.n}),
                timeout_s=TIMEOUT_S,
            )
        ],
    )


ROLLED = {1: _rolled(1), 2: _rolled(2)}
_versions = os.environ.get("VERSIONED_ORCHESTRATOR_VERSIONS", "1,2")
orchestrator = SagaOrchestrator(
    SagaRegistry([ROLLED[int(v)] for v in _versions.split(",")]),
    topics=SagaTopics(os.environ.get("VERSIONED_SAGA_NAMESPACE", "saga")),
)
processor = orchestrator_processor(
    orchestrator, name=os.environ.get("VERSIONED_ORCHESTRATOR_GROUP", "rolled-saga-orchestrator")
)
