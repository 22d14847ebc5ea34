"""The processor's switch interval: how long the event loop may keep the interpreter."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from pipeline.processing.faust.app import use_switch_interval
from pipeline.settings import ProcessingSettings


@pytest.fixture(autouse=True)
def restore_switch_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def test_the_interval_is_set_in_milliseconds() -> None:
    use_switch_interval(0.5)

    assert sys.getswitchinterval() == pytest.approx(0.0005)


def test_the_default_is_a_tenth_of_pythons_own() -> None:
    default = ProcessingSettings().switch_interval_ms

    use_switch_interval(default)

    assert sys.getswitchinterval() == pytest.approx(0.0005)


def test_an_interval_of_zero_or_less_is_refused_by_the_settings() -> None:
    with pytest.raises(ValueError, match="switch_interval_ms"):
        ProcessingSettings(switch_interval_ms=0)
