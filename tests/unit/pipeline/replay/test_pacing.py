"""When each replayed message is due: by rate, by the recorded timestamps, or at once."""

import pytest

from pipeline.errors import PipelineError
from pipeline.replay.pacing import Pacing, Schedule, parse_rate, parse_speed


def test_unpaced_every_message_is_due_at_once():
    schedule = Schedule(None)
    assert not schedule.paced
    assert [schedule.due_s(ts) for ts in (5, 1_000_000, None)] == [0.0, 0.0, 0.0]


def test_by_rate_message_n_is_due_at_n_over_the_rate():
    schedule = Schedule(Pacing(rate_per_s=4))
    assert schedule.paced
    assert [schedule.due_s(None) for _ in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_by_speed_messages_are_due_at_their_recorded_distance_divided_by_the_speed():
    schedule = Schedule(Pacing(speed=10))
    stamps = [10_000, 10_500, 12_000, 30_000]
    assert [schedule.due_s(ts) for ts in stamps] == [0.0, 0.05, 0.2, 2.0]


def test_by_speed_an_older_stamp_or_none_is_due_with_the_message_before():
    schedule = Schedule(Pacing(speed=1))
    assert schedule.due_s(None) == 0.0  # nothing to go by yet
    assert schedule.due_s(1_000) == 0.0
    assert schedule.due_s(3_000) == 2.0
    assert schedule.due_s(2_000) == 2.0  # stamped earlier: sent at once, after the last one
    assert schedule.due_s(None) == 2.0
    assert schedule.due_s(4_000) == 3.0


def test_a_slower_speed_stretches_the_recording():
    schedule = Schedule(Pacing(speed=0.5))
    assert [schedule.due_s(ts) for ts in (0, 1_000)] == [0.0, 2.0]


@pytest.mark.parametrize(
    ("pacing", "says"),
    [
        ({"rate_per_s": 1, "speed": 2}, "not both"),
        ({"rate_per_s": 0}, "--rate must be above 0"),
        ({"speed": -1}, "--speed must be above 0"),
    ],
)
def test_bad_pacing_is_refused(pacing, says):
    with pytest.raises(PipelineError, match=says):
        Pacing(**pacing)


@pytest.mark.parametrize(("text", "rate"), [("500/s", 500), ("500", 500), ("2.5 / s", 2.5)])
def test_rates_as_typed(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize(("text", "speed"), [("10x", 10), ("10", 10), ("0.5X", 0.5), (".5", 0.5)])
def test_speeds_as_typed(text, speed):
    assert parse_speed(text) == speed


@pytest.mark.parametrize("text", ["fast", "0/s", "-1", "5/m", ""])
def test_a_rate_that_is_not_one_is_refused(text):
    with pytest.raises(PipelineError, match="--rate takes messages per second"):
        parse_rate(text)


@pytest.mark.parametrize("text", ["x", "0x", "ten", "10xx"])
def test_a_speed_that_is_not_one_is_refused(text):
    with pytest.raises(PipelineError, match="--speed takes a factor"):
        parse_speed(text)
