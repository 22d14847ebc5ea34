"""The processor's switch interval: how long the event loop may keep the interpreter."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from pipeline.processing.faust.app import POSTGRES_SWITCH_INTERVAL_MS, use_switch_interval
from pipeline.settings import ProcessingSettings


@pytest.fixture(autouse=True)
def restore_switch_interval() -> Iterator[float]:
    before = sys.getswitchinterval()
    yield before
    sys.setswitchinterval(before)


def postgres() -> Engine:
    return create_engine("postgresql+psycopg://user@127.0.0.1:1/none")  # never connects


def test_a_set_interval_is_used_in_milliseconds_on_any_database(database: Engine) -> None:
    use_switch_interval(2.0, database)

    assert sys.getswitchinterval() == pytest.approx(0.002)


def test_unset_on_postgresql_it_is_the_short_one() -> None:
    use_switch_interval(None, postgres())

    assert sys.getswitchinterval() == pytest.approx(POSTGRES_SWITCH_INTERVAL_MS / 1000)


def test_unset_on_sqlite_pythons_own_is_kept(
    database: Engine, restore_switch_interval: float
) -> None:
    use_switch_interval(None, database)

    assert sys.getswitchinterval() == restore_switch_interval


def test_the_setting_is_unset_by_default_and_refuses_zero() -> None:
    assert ProcessingSettings().switch_interval_ms is None
    with pytest.raises(ValueError, match="switch_interval_ms"):
        ProcessingSettings(switch_interval_ms=0)
