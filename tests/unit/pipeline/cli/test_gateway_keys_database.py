"""``pipeline gateway keys list|revoke`` only read or change keys that exist: a database no
program wrote to is an error, not an empty one made on the spot (which said "the gateway is
open")."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.errors import PipelineError


@pytest.mark.parametrize("command", [["list"], ["revoke", "shop"]], ids=["list", "revoke"])
def test_list_and_revoke_refuse_a_database_that_does_not_exist(command, tmp_path):
    missing = tmp_path / "typo" / "pipeline.db"

    result = CliRunner().invoke(
        app,
        ["gateway", "keys", *command],
        env={"PIPELINE_DATABASE__URL": f"sqlite:///{missing}"},
    )

    assert isinstance(result.exception, PipelineError), result.output
    assert f"no database at {missing}" in str(result.exception)
    assert not missing.parent.exists()
