"""The layout rule's import contracts (pyproject.toml, run by `make lint`) pass on the tree as it
is, and each one fails when an import it forbids is added to a copy of the tree."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_of_the_tree(tmp_path: Path) -> Path:
    for package in ("pipeline", "producers", "consumers"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    # The copy comes first on the path, so the contracts are checked against it, not the repo.
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_keeps_every_contract(tmp_path):
    result = _lint_imports(_copy_of_the_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
    assert "4 kept" in result.stdout


@pytest.mark.parametrize(
    ("module", "forbidden_import", "contract"),
    [
        ("pipeline/kafka/clients.py", "import producers.gateway", "pipeline/ (the library)"),
        ("producers/ndjson.py", "import consumers.log_shipper", "producers/ and consumers/"),
        ("pipeline/ids.py", "import faust", "Faust is used only by its binding"),
        ("pipeline/errors.py", "import pipeline.outbox.table", "The foundations"),
    ],
)
def test_a_forbidden_import_breaks_its_contract(tmp_path, module, forbidden_import, contract):
    tree = _copy_of_the_tree(tmp_path)
    with (tree / module).open("a") as source:
        source.write(f"\n{forbidden_import}  # added by the test\n")
    result = _lint_imports(tree)
    assert result.returncode != 0
    assert _verdict(result.stdout, contract) == "BROKEN", result.stdout


def _verdict(report: str, contract: str) -> str:
    """KEPT or BROKEN after the contract's name in lint-imports' report (long names wrap)."""
    summary = " ".join(report.split("Contracts:")[0].split())
    match = re.search(re.escape(contract) + r".*?\b(KEPT|BROKEN)\b", summary)
    assert match, f"{contract!r} not in the report"
    return match.group(1)
