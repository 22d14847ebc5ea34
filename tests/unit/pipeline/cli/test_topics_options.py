"""``pipeline topics``' number options are bounded by Click: a value Kafka cannot take is a usage
error (exit code 2, the option named), not a traceback from building the catalogue."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app


@pytest.mark.parametrize(
    "args",
    [
        ["topics", "list", "--replication-factor", "99999999999999999999999"],
        ["topics", "apply", "--replication-factor", "40000", "--dry-run"],
        ["topics", "apply", "--replication-factor", "32768"],
    ],
    ids=["list, a huge number", "apply --dry-run", "one above int16"],
)
def test_a_replication_factor_kafka_cannot_take_is_a_usage_error(args):
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})

    assert result.exit_code == 2, result.output
    assert "Invalid value for '--replication-factor'" in result.output
    assert "32767" in result.output


def test_the_largest_replication_factor_is_accepted_by_the_option():
    # 32767 passes the option (Kafka itself then says whether the brokers can hold it).
    from pipeline.cli.topics import _catalogue

    assert {spec.replication_factor for spec in _catalogue(None, 32767)} == {32767}
