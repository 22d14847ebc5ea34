"""What the parent of a replay's processes makes of their answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.replay import processes
from pipeline.replay.replayer import ReplayError, ReplayStopped, ReplaySummary
from pipeline.replay.tally import ReplayTally
from pipeline.settings import KafkaSettings


def summary(sent):
    return ReplaySummary(sent=sent, per_topic={"copy": sent}, elapsed_s=0.1)


def test_a_process_stopped_part_way_counts_what_it_had_acknowledged():
    tally = ReplayTally()
    tally.add(0, ("stopped", summary(999), "r.ndjson:1502: the message was refused: too large"))
    tally.add(1, ("interrupted", summary(1_000)))

    assert tally.summary(0.0).sent == 1_999 and tally.queued
    assert tally.errors == ["replay process 0: r.ndjson:1502: the message was refused: too large"]


class _Pipes:
    def __init__(self):
        self.told = []

    def tell(self, data):
        self.told.append(data)


def _team_answering(monkeypatch, answers):
    """A team of two processes (none started) whose answers are ``answers``."""
    sizes = processes._PartitionCounts(KafkaSettings())
    options = {"topic": "copy", "preserve_partitions": False, "rewrite_ids": False}
    team = processes._Team(sizes, Path("r.ndjson"), 2, options)
    team._pipes = [_Pipes(), _Pipes()]

    def collect(waiting):
        index, answer = answers.pop(0)
        del waiting[index]
        return [(index, answer)]

    monkeypatch.setattr(team, "_collect", collect)
    monkeypatch.setattr(team, "_waiting", lambda: dict.fromkeys(index for index, _ in answers))
    return team


def test_a_process_stopped_part_way_ends_the_replay_with_the_summary_of_all(monkeypatch):
    # With -j 2 the command then prints what was acknowledged, then the error (as with -j 1).
    answers = [
        (0, ("stopped", summary(999), "r.ndjson:1502: the message was refused: too large")),
        (1, ("sent", summary(1_000))),  # it had sent all its own
    ]
    team = _team_answering(monkeypatch, answers)
    with pytest.raises(ReplayStopped) as stopped:
        team.send(None, {"copy": 3})

    assert stopped.value.summary.sent == 1_999
    assert stopped.value.summary.per_topic == {"copy": 1_999}
    assert str(stopped.value) == (
        "replay process 0: r.ndjson:1502: the message was refused: too large"
    )


def test_an_error_before_any_process_sent_is_raised_alone(monkeypatch):
    answers = [
        (0, ("error", "RuntimeError: no more memory")),
        (1, ("interrupted", ReplaySummary(0, {}, 0.0))),
    ]
    team = _team_answering(monkeypatch, answers)
    with pytest.raises(ReplayError, match="replay process 0: RuntimeError") as raised:
        team.send(None, {"copy": 3})
    assert not isinstance(raised.value, ReplayStopped)
