"""Option callbacks that check what Typer's types do not."""

from __future__ import annotations

import pytest
import typer

from pipeline.cli.checks import group_name


def test_a_group_name_is_some_text_without_control_characters() -> None:
    assert group_name(None) is None
    assert group_name("billing-readers") == "billing-readers"
    with pytest.raises(typer.BadParameter, match="must not be empty"):
        group_name("  ")
    with pytest.raises(typer.BadParameter, match=r"holds a control character \('\\x01' at 5\)"):
        group_name("rve-\x01")


def test_a_group_name_that_is_not_utf8_is_refused() -> None:
    # From argv's bytes (surrogates): confluent-kafka's consumer aborted the process.
    with pytest.raises(typer.BadParameter, match="is not UTF-8 text"):
        group_name("rvi-\udcff")
