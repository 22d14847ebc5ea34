"""The package's own attributes."""

from __future__ import annotations

from importlib import metadata

import pipeline


def test_the_package_says_its_version_as_the_command_does():
    assert pipeline.__version__ == metadata.version("event-pipeline")
