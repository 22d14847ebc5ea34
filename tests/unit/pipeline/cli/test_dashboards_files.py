"""``pipeline dashboards``' files: an --file that is not UTF-8 text is one line naming it, and
``export --out -`` is refused (the export is two files, there is no stdout form of it)."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.errors import PipelineError

#: Nothing listens there: each test fails before any request.
KIBANA = "http://127.0.0.1:18199"


def _import(path):
    return CliRunner().invoke(
        app, ["dashboards", "import", "--file", str(path), "--kibana-url", KIBANA]
    )


@pytest.mark.parametrize(
    ("content", "line"),
    [
        (os.urandom(16) + b"\xff\xfe" + os.urandom(3000), 1),
        (b'{"type": "search", "id": "a"}\n{"title": "caf\xe9"}\n', 2),
    ],
    ids=["random bytes", "latin-1 on line 2"],
)
def test_a_file_that_is_not_utf8_is_one_line_naming_it(tmp_path, content, line):
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(content)

    result = _import(garbage)

    assert isinstance(result.exception, PipelineError), result.output
    message = str(result.exception)
    assert message == (
        f"{garbage} is not UTF-8 text (line {line}): give an NDJSON export of saved objects"
    )


def test_a_missing_file_or_a_folder_is_one_line(tmp_path):
    missing = _import(tmp_path / "nothere.ndjson")
    folder = _import(tmp_path)

    assert isinstance(missing.exception, PipelineError)
    assert "No such file or directory" in str(missing.exception)
    assert folder.exit_code == 2
    assert "is a directory" in folder.output


def test_export_to_dash_is_refused_and_makes_no_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    result = CliRunner().invoke(app, ["dashboards", "export", "--out", "-"])

    assert result.exit_code == 2, result.output
    assert "Invalid value for '--out'" in result.output
    assert "not stdout" in result.output
    assert list(tmp_path.iterdir()) == []


def test_export_help_says_dash_is_not_stdout():
    result = CliRunner().invoke(app, ["dashboards", "export", "-h"], env={"COLUMNS": "200"})

    assert "so - for stdout is refused" in result.output
