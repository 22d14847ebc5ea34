"""The consumer lag counts from the fetch position, as Kafka's own tools do."""

from __future__ import annotations

from pipeline.processing.metrics import consumer_lag


def test_the_lag_is_the_end_offset_minus_the_fetch_position() -> None:
    assert consumer_lag(highwater=10, position=7) == 3


def test_a_transaction_marker_after_the_last_event_is_no_lag() -> None:
    # Events at offsets 0-4, the commit marker at 5: the end offset is 6, and the consumer,
    # having read the batch, fetches next from 6.
    assert consumer_lag(highwater=6, position=6) == 0


def test_the_lag_is_never_negative() -> None:
    assert consumer_lag(highwater=5, position=6) == 0


def test_an_unknown_end_or_position_is_no_lag_figure() -> None:
    assert consumer_lag(highwater=None, position=3) is None
    assert consumer_lag(highwater=-1, position=3) is None
    assert consumer_lag(highwater=3, position=None) is None
