"""Counts agree with their noun: "1 event", "2 events"."""

from __future__ import annotations

import pytest

from pipeline.plurals import counted


@pytest.mark.parametrize(
    ("count", "expected"),
    [(0, "0 events"), (1, "1 event"), (2, "2 events"), (1234, "1,234 events")],
)
def test_counted_uses_the_singular_for_one_only(count, expected):
    assert counted(count, "event") == expected


def test_counted_takes_an_irregular_plural():
    assert counted(1, "entry", "entries") == "1 entry"
    assert counted(3, "entry", "entries") == "3 entries"
