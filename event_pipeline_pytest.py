"""The pytest plugin's switch (registered through the ``pytest11`` entry point).

Installing this package must not change how another project's tests run, so this module, which
pytest loads in every project where the package is installed, only adds one ini option and does
nothing else unless a project turns the plugin on. It is a top-level module of a name of its
own, importing nothing of the package: a project with a ``pipeline`` package of its own (a
common name) would otherwise have ours imported at pytest's start, in its place (its tests
failed to import it, or pytest failed to load the plugin).

The plugin is turned on by:

- ``pipeline_plugin = true`` in its pytest configuration (``[tool.pytest.ini_options]`` of
  pyproject.toml, or pytest.ini / tox.ini / setup.cfg), or
- ``-p pipeline.testing.fixtures`` on the command line (or in ``addopts``).

Then pipeline/testing/fixtures.py is registered, before the command line is parsed, so its
options (``--pipeline-backend``, ``--update-golden``, ...) and fixtures exist.
``-p no:pipeline`` blocks even this switch.
"""

from __future__ import annotations

import pytest

__all__ = ["ENABLE_OPTION", "PLUGIN"]

#: The module with the fixtures and options.
PLUGIN = "pipeline.testing.fixtures"
#: The ini option that turns it on.
ENABLE_OPTION = "pipeline_plugin"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        ENABLE_OPTION,
        type="bool",
        default=False,
        help="turn on the event-pipeline plugin (fixtures for Kafka, replay and golden files)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    # Called for plugins loaded through entry points only, after the ini file is read and
    # before the command line is parsed: options the plugin adds now are still parsed.
    if early_config.getini(ENABLE_OPTION):
        early_config.pluginmanager.import_plugin(PLUGIN)
