import os

import pytest

from tests.support.stack_cli import isolated_stack_env as _isolated_stack_env


@pytest.fixture
def clean_pipeline_environment(monkeypatch, tmp_path):
    """No PIPELINE_* variable and no stray .env file: settings at their defaults."""
    for name in [name for name in os.environ if name.startswith("PIPELINE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def isolated_stack_env(pipeline_settings):
    """Environment variables for a second stack of its own (free ports, own state)."""
    with _isolated_stack_env(pipeline_settings) as env:
        yield env
