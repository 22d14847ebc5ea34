"""The project's test conventions and shared fixtures.

Tests are marked by their folder: ``unit`` (no network: sockets are disabled, by pytest-socket),
``integration`` (the real stack), ``chaos`` (slow faults: kill -9, outages), ``e2e`` (the whole
demo). The fixtures of the real stack, replay and golden files come from the project's pytest
plugin (pipeline/testing/fixtures.py), turned on in pyproject.toml (``pipeline_plugin``).
"""

import os
from pathlib import Path

import pytest

from tests.support.stack_cli import isolated_stack_env as _isolated_stack_env

_KINDS = ("unit", "integration", "chaos", "e2e")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "unit: needs no network (sockets are disabled)")
    config.addinivalue_line("markers", "integration: runs against the real Kafka/Elasticsearch")
    config.addinivalue_line("markers", "chaos: slow faults such as kill -9 and outages")
    config.addinivalue_line("markers", "e2e: the whole demo, end to end")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.path)).parts
        for kind in _KINDS:
            if kind in parts and "tests" in parts:
                item.add_marker(getattr(pytest.mark, kind))
        if item.get_closest_marker("unit") is not None:
            item.add_marker(pytest.mark.disable_socket)


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
