"""Our Faust fetch loop is installed only on the Faust versions it was checked against."""

from __future__ import annotations

import faust
import pytest

from pipeline.processing.faust import drain as faust_drain


def app() -> faust.App:
    return faust.App("drain-test", broker="kafka://127.0.0.1:1", autodiscover=False)


def test_install_replaces_the_consumers_fetch_loop_on_a_checked_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(faust, "__version__", "0.15.3")
    faust_app = app()

    assert faust_drain.install(faust_app) is True
    assert faust_app.consumer._drain_messages.__func__ is faust_drain.drain_messages


def test_install_keeps_fausts_own_loop_on_another_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faust, "__version__", "0.16.0")
    faust_app = app()
    own = type(faust_app.consumer)._drain_messages

    assert faust_drain.install(faust_app) is False
    assert faust_app.consumer._drain_messages.__func__ is own
