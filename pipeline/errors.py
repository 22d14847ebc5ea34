"""The base of every error the project expects and reports to a person in one line."""

from __future__ import annotations


class PipelineError(Exception):
    """An expected failure with a message fit for one line of output (no traceback)."""
