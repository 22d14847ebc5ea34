"""The command line's counts in words: :func:`pipeline.plurals.counted`, kept here for the
command modules that import it from the CLI."""

from __future__ import annotations

from pipeline.plurals import counted

__all__ = ["counted"]
