"""``pipeline topics apply``: what it leaves alone (a topic with more partitions than the
catalogue says: Kafka cannot remove partitions) is a warning on stderr; stdout is the plan's.
The warning was printed on stdout, among the plan table a script reads.

Kafka is replaced: the built-in catalogue's topics exist as it says, but for the changes each
test makes."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.topics.catalogue import default_catalogue
from pipeline.topics.plan import ActualTopic

CATALOGUE = default_catalogue()
WIDER, MISSING = CATALOGUE.names[0], CATALOGUE.names[1]


def _as_catalogued(name: str, more_partitions: int = 0) -> ActualTopic:
    spec = next(spec for spec in CATALOGUE if spec.name == name)
    return ActualTopic(
        name,
        spec.partitions + more_partitions,
        spec.replication_factor,
        configs=spec.desired_configs(),
        overridden=frozenset(spec.desired_configs()),
    )


@pytest.fixture
def topics() -> dict[str, ActualTopic]:
    """The broker's topics: the catalogue's, ``WIDER`` with 2 more partitions, ``MISSING``
    not there."""
    return {
        name: _as_catalogued(name, 2 if name == WIDER else 0)
        for name in CATALOGUE.names
        if name != MISSING
    }


@pytest.fixture
def kafka(monkeypatch: pytest.MonkeyPatch, topics: dict[str, ActualTopic]) -> list[Any]:
    """Kafka with ``topics``; the plans applied (or checked, --dry-run)."""
    applied: list[Any] = []
    monkeypatch.setattr("pipeline.kafka.clients.build_admin", lambda kafka: object())
    monkeypatch.setattr(
        "pipeline.topics.admin.describe_cluster_topics",
        lambda admin, names, **kwargs: {name: topics[name] for name in names if name in topics},
    )
    monkeypatch.setattr(
        "pipeline.topics.admin.apply_plan", lambda admin, plan, **kwargs: applied.append(plan)
    )
    return applied


def _warning() -> str:
    partitions = _as_catalogued(WIDER).partitions
    return (
        f"warning: topic {WIDER} has {partitions + 2} partitions, the catalogue says "
        f"{partitions}: Kafka cannot remove partitions (recreate the topic to shrink it)"
    )


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["apply", "dry-run"])
def test_the_warning_goes_to_stderr_and_the_plan_to_stdout(kafka: list[Any], dry_run: list[str]):
    result = CliRunner().invoke(app, ["topics", "apply", *dry_run], env={"COLUMNS": "300"})

    assert result.exit_code == 0, result.output
    assert len(kafka) == 1  # the missing topic's creation, applied or checked
    assert "warning" not in result.stdout, result.stdout
    assert "Topic changes" in result.stdout and MISSING in result.stdout
    assert result.stderr.splitlines() == [_warning()]


def test_with_nothing_to_apply_the_warning_is_still_on_stderr_alone(
    topics: dict[str, ActualTopic], kafka: list[Any]
):
    topics[MISSING] = _as_catalogued(MISSING)

    result = CliRunner().invoke(app, ["topics", "apply"], env={"COLUMNS": "300"})

    assert result.exit_code == 0, result.output
    assert kafka == []
    assert result.stdout == "no changes to apply\n"
    assert result.stderr.splitlines() == [_warning()]
