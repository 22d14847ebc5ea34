from tests.support.stack_cli import run_pipeline


def test_make_demo_sends_requests_through_the_gateway_and_finds_each_in_kafka_once(
    pipeline_stack,
    postgres_stack,  # `pipeline demo` starts the whole stack; the session stops what it started
):
    result = run_pipeline("demo", "--requests", "400")
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
