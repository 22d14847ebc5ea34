"""The catalogue's topics, for the gateway tests that produce to ``requests.orders``: a
session that runs them alone on a stack just started must not depend on another test having
created it (a message to a missing topic waits out the whole produce timeout: a 503)."""

from __future__ import annotations

import pytest

from tests.support.stack_cli import run_pipeline


@pytest.fixture(scope="session")
def catalogue_topics(pipeline_stack) -> None:
    applied = run_pipeline("topics", "apply")
    assert applied.returncode == 0, applied.stderr
