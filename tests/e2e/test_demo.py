import pytest

from tests.support.stack_cli import run_pipeline


@pytest.mark.timeout(660)
def test_make_demo_sends_requests_through_the_gateway_and_ends_every_order_saga_with_its_invariants(
    pipeline_stack,
    postgres_stack,  # `pipeline demo` starts the whole stack; the session stops what it started
):
    result = run_pipeline("demo", "--requests", "400", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    verdict = [line for line in lines if "every accepted request in Kafka exactly once" in line]
    assert len(verdict) == 1 and "yes" in verdict[0]
    assert any("rejected: schema_violation" in line for line in lines)
    assert any("requests.orders" in line for line in lines)  # per-partition counts
    # The orders service's part: the re-sent requests were skipped by the inbox, the poisoned
    # ones dead-lettered, the outbox drained, and the summary says where to look.
    duplicates = [line for line in lines if "duplicates skipped by the inbox" in line]
    assert len(duplicates) == 1 and int(duplicates[0].split("│")[-2].strip()) >= 50
    assert any("dead-lettered:" in line for line in lines)
    backlog = [line for line in lines if "outbox backlog" in line]
    assert len(backlog) == 1 and backlog[0].split("│")[-2].strip().endswith("0")
    assert any("pipeline dlq inspect requests.orders" in line for line in lines)
    assert any("pipeline logs search 'event.action:dead_lettered'" in line for line in lines)
    # The sagas' part: every order's CreateOrder saga ended, some compensated on purpose, and
    # each invariant is printed as held.
    for invariant in (
        "every saga ended",
        "stock never negative and conserved",
        "money conserved",
        "approved orders charged, shipped and sold",
    ):
        verdicts = [line for line in lines if invariant in line]
        assert len(verdicts) == 1 and "held" in verdicts[0], verdicts
    assert any(line.strip().startswith("│   completed") for line in lines)
    assert any(line.strip().startswith("│   compensated") for line in lines)
    assert any("pipeline saga show" in line for line in lines)
