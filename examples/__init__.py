"""Runnable examples: ``quickstart/`` is the README's quick start, run by a test."""
