"""An interrupted demo says at once that its services are stopping: their drains take up to
their timeouts, and it was silent for 30 s meanwhile."""

from __future__ import annotations

import pytest

from pipeline.cli import demo_services


def test_an_interrupt_says_the_services_are_stopping_once(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(demo_services, "_STOPPING_SAID", [])
    log = str(tmp_path / "child.log")

    with (
        pytest.raises(KeyboardInterrupt),
        demo_services._child(["sleep", "30"], {}, log) as outer,
        demo_services._child(["sleep", "30"], {}, log) as inner,
    ):
        raise KeyboardInterrupt

    said = capsys.readouterr().err
    assert said.count("stopping the demo's services") == 1
    assert outer.poll() is not None and inner.poll() is not None
