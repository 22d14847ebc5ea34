import pytest

from tests.support.stack_cli import isolated_stack_env as _isolated_stack_env


@pytest.fixture
def isolated_stack_env(pipeline_settings):
    """Environment variables for a second stack of its own (free ports, own state)."""
    with _isolated_stack_env(pipeline_settings) as env:
        yield env
