"""The demo's "what to try next": where a compensation kept failing, the operator's commands for
it come first (a newcomer was shown only the compensated and completed sagas)."""

from __future__ import annotations

import pytest

from pipeline.cli import demo
from pipeline.cli.demo_sagas import SagaReport


def _next_steps(report: SagaReport, capsys: pytest.CaptureFixture[str]) -> str:
    demo._print_saga_summary(report, "the stack's PostgreSQL")
    out = capsys.readouterr().out
    return out[out.index("what to try next") :]


def test_a_saga_whose_compensation_failed_gets_retry_and_resolve(capsys) -> None:
    report = SagaReport(
        by_state={"completed": 3, "compensation_failed": 1},
        examples={"completed": "s-ok", "compensation_failed": "s-stuck"},
    )

    said = _next_steps(report, capsys)

    assert "pipeline saga list --state compensation_failed" in said
    assert "pipeline saga retry s-stuck" in said
    assert 'pipeline saga resolve s-stuck --note "refunded by hand"' in said
    assert said.index("retry s-stuck") < said.index("saga show s-ok")


def test_without_one_no_retry_is_offered(capsys) -> None:
    said = _next_steps(
        SagaReport(by_state={"completed": 3}, examples={"completed": "s-ok"}), capsys
    )

    assert "retry" not in said and "pipeline saga show s-ok" in said
