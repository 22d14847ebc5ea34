"""Every file of the packages that is not Python is declared package data: a wheel left out
Alembic's migration template, pipeline/migrations/script.py.mako."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "producers", "consumers")


def test_every_file_of_the_packages_that_is_not_python_is_package_data():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"].get(
        "package-data", {}
    )
    patterns = [(package, pattern) for package, globs in declared.items() for pattern in globs]
    others = [
        path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    ]

    assert others, "no data file found: the test would pass for nothing"
    missing = [
        str(path.relative_to(ROOT))
        for path in others
        if not any(path.match(str(ROOT / package / pattern)) for package, pattern in patterns)
    ]
    assert missing == []
