"""A consistent command line: -h everywhere, --version, and help that matches what runs."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import typer
import typer.main
from typer.testing import CliRunner

from pipeline.cli.main import DISTRIBUTION, PipelineCommands, app
from pipeline.request_types import REQUEST_TYPES

#: The console script, as a user runs it (installed beside this interpreter).
PIPELINE = str(Path(sys.executable).with_name("pipeline"))

COMMANDS = [
    [],
    ["consume"],
    ["produce"],
    ["process"],
    ["gateway"],
    ["outbox"],
    ["outbox", "status"],
    ["dlq", "inspect"],
    ["stack", "up"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "pipeline")
def test_dash_h_is_help_like_dash_dash_help(command):
    short = CliRunner().invoke(app, [*command, "-h"], env={"COLUMNS": "120"})
    long = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "120"})

    assert short.exit_code == 0, short.output
    assert short.output == long.output
    assert "Usage:" in short.output


def test_version_prints_the_installed_version():
    result = CliRunner().invoke(app, ["--version"])

    assert result.exit_code == 0, result.output
    assert result.output == f"pipeline {metadata.version(DISTRIBUTION)}\n"


def test_help_lists_every_command_with_the_start_of_its_own_help():
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    rows = {line.split()[1]: line for line in result.output.splitlines() if line.startswith("│ ")}
    group = typer.main.get_command(app)
    context = typer.Context(group)

    assert result.exit_code == 0, result.output
    for name in PipelineCommands.lazy_commands:
        command = group.get_command(context, name)
        first_words = " ".join((command.short_help or command.help).split()[:4])
        assert first_words in rows[name], rows[name]


@pytest.mark.parametrize(
    ("command", "suggested"),
    [(["proces"], "'process', 'produce'"), (["outbox", "relya"], "'relay'")],
    ids=["proces", "outbox relya"],
)
def test_an_unknown_command_is_an_error_that_suggests_the_nearest(command, suggested):
    result = CliRunner().invoke(app, command, env={"COLUMNS": "200"})

    assert result.exit_code == 2
    assert f"No such command '{command[-1]}'. Did you mean {suggested}?" in result.output
    assert "Traceback" not in result.output


def test_gateway_help_names_each_request_type_and_its_topic():
    result = CliRunner().invoke(app, ["gateway", "--help"], env={"COLUMNS": "200"})
    text = " ".join(result.output.replace("│", " ").split())

    for request in REQUEST_TYPES.values():
        assert f"{request.name} to {request.topic}" in text, text


def _options_of(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_dash_k_is_a_key_value_wherever_it_is_used_and_produce_names_its_key_field():
    produce = _options_of("produce")

    assert "--key-field" in produce
    assert " -k " not in produce
    assert "--key " not in produce  # its earlier name still works, unlisted
    for command in (("dlq", "inspect"), ("dlq", "redrive")):
        help_text = _options_of(*command)
        assert "--key" in help_text and "-k" in help_text


def test_produce_refuses_its_key_field_under_both_names(tmp_path):
    source = tmp_path / "in.ndjson"
    source.write_text('{"id": "1"}\n')

    result = CliRunner().invoke(
        app, ["produce", "t", str(source), "--key-field", "id", "--key", "id"]
    )

    assert result.exit_code == 2
    assert "give --key-field only" in result.output


def test_loading_the_command_line_does_not_load_alembic():
    # Alembic is loaded by the commands that migrate, not by `pipeline --help` or a read.
    code = "import sys, pipeline.cli.main; print(sorted(m for m in sys.modules if m == 'alembic'))"
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )

    assert found.stdout.strip() == "[]"


def test_an_error_line_shows_no_password_and_its_brackets_as_written():
    code = (
        "import sys; from pipeline.cli import main; from pipeline.errors import PipelineError\n"
        "def fail(): raise PipelineError('cannot reach http://elastic:s3cret@es:9200; "
        "expected [[topic]] tables')\n"
        "main.app = fail; main.run()"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )

    assert found.returncode == 2
    assert "s3cret" not in found.stderr
    assert "http://elastic:[REDACTED]@es:9200" in found.stderr
    assert "expected [[topic]] tables" in found.stderr


def test_an_unreadable_file_and_a_number_out_of_range_are_error_lines_not_tracebacks():
    code = (
        "import sys; from pipeline.cli import main\n"
        "def fail(): raise {error}\n"
        "main.app = fail; main.run()"
    )
    for error, says in [
        ("PermissionError(13, 'Permission denied', '/root/x.ndjson')", "denied: /root/x.ndjson"),
        ("OverflowError('int too large')", "a number is out of range: int too large"),
    ]:
        found = subprocess.run(
            [sys.executable, "-c", code.format(error=error)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert found.returncode == 2
        [line] = found.stderr.strip().splitlines()  # one line, no traceback
        assert line.startswith("error: ") and line.endswith(says)


def test_an_empty_group_or_alias_is_a_usage_error():
    for args in (["consume", "t", "--group", ""], ["dashboards", "template", "--alias", " "]):
        result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})

        assert result.exit_code == 2, args
        assert "must not be empty" in result.output


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--bogus"], "error: No such option: --bogus (see pipeline -h)"),
        (["produce"], "error: Missing argument 'topic' (see pipeline produce -h)"),
        (
            ["gateway", "--port", "abc"],
            "error: Invalid value for '--port': Input should be a valid integer, unable to parse "
            "string as an integer (see pipeline gateway -h)",
        ),
        (
            ["outbox", "relya"],
            "error: No such command 'relya'. Did you mean 'relay'? (see pipeline outbox -h)",
        ),
        (
            ["saga", "list", "--state"],
            "error: Option '--state' requires an argument (see pipeline saga list -h)",
        ),
        (["saga", "--x", "list"], "error: No such option: --x (see pipeline saga -h)"),
        (
            ["stack", "up", "--only", "zookeeper"],
            "error: Invalid value for '--only': 'zookeeper' is not one of 'kafka', "
            "'elasticsearch', 'postgres' (see pipeline stack up -h)",
        ),
        (
            ["outbox", "relay", "--poll-interval", "inf"],
            "error: Invalid value for '--poll-interval': Input should be less than or equal to "
            "86400 (see pipeline outbox relay -h)",
        ),
    ],
    ids=[
        "top-level option",
        "missing argument",
        "bad value",
        "unknown sub-command",
        "missing option value",
        "group option",
        "value not among the choices",
        "an endless wait",
    ],
)
def test_a_usage_error_is_one_line_naming_the_commands_help_and_exit_2(args, line):
    found = subprocess.run(
        [PIPELINE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "80"},
    )

    assert found.returncode == 2
    assert found.stderr.strip().splitlines() == [line]  # no usage, no box
    assert found.stdout == ""


def test_a_group_without_arguments_still_shows_its_help():
    found = subprocess.run([PIPELINE], capture_output=True, text=True, timeout=120)

    assert "Usage: pipeline" in found.stdout + found.stderr
    assert "error:" not in found.stdout + found.stderr


@pytest.mark.parametrize(
    ("name", "value", "line"),
    [
        (
            "PIPELINE_OUTBOX__ROUTES",
            '{"invoice": "billing.events"',
            "error: invalid setting: PIPELINE_OUTBOX__ROUTES is not valid JSON (Expecting ',' "
            "delimiter: line 1 column 29 (char 28))",
        ),
        (
            "PIPELINE_GATEWAY__TRUSTED_PROXIES",
            "10.0.0.0/8",
            "error: invalid setting: PIPELINE_GATEWAY__TRUSTED_PROXIES: a list or map setting "
            """takes JSON, e.g. '["10.0.0.0/8"]' or '{"name": "value"}'""",
        ),
    ],
    ids=["broken JSON", "not JSON"],
)
def test_a_list_or_map_setting_that_is_not_json_is_named(name, value, line):
    found = subprocess.run(
        [PIPELINE, "topics", "list"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, name: value, "COLUMNS": "300"},
    )

    assert found.returncode == 2
    assert found.stderr.strip().splitlines() == [line]


def _refused_with(command: str, setting: str, value: str) -> list[str]:
    """The stderr lines of ``pipeline COMMAND`` with ``setting=value``, which must exit 2."""
    found = subprocess.run(
        [PIPELINE, *command.split()],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, setting: value, "COLUMNS": "300"},
    )
    assert found.returncode == 2
    return found.stderr.strip().splitlines()


def test_a_setting_that_turns_its_section_on_is_named_with_what_the_section_lacks():
    # "invalid setting gateway.jwt.issuer: Field required" for PIPELINE_GATEWAY__JWT__LEEWAY_S
    # alone (valid on its own) left the user to guess why JWT was on at all.
    lines = _refused_with("outbox status", "PIPELINE_GATEWAY__JWT__LEEWAY_S", "60")

    assert lines == [
        "error: invalid setting gateway.jwt.issuer: Field required "
        "(PIPELINE_GATEWAY__JWT__LEEWAY_S set, which turns gateway.jwt on)"
    ]


def test_a_misspelled_setting_is_a_one_line_error_naming_the_one_meant(tmp_path):
    # Ignored, it sent the events to the default broker instead of the one meant.
    in_environment = subprocess.run(
        [PIPELINE, "topics", "list"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": "elsewhere:9092"},
    )
    (tmp_path / ".env").write_text("PIPELINE_SERVICENAME=billing\n")
    in_env_file = subprocess.run(
        [PIPELINE, "topics", "list"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )

    assert in_environment.returncode == in_env_file.returncode == 2
    assert in_environment.stderr.strip().splitlines() == [
        "error: PIPELINE_KAFKA_BOOTSTRAP_SERVERS is not a setting: did you mean "
        "PIPELINE_KAFKA__BOOTSTRAP_SERVERS?"
    ]
    assert in_env_file.stderr.strip().splitlines() == [
        "error: PIPELINE_SERVICENAME is not a setting: did you mean PIPELINE_SERVICE_NAME?"
    ]


def test_a_rejects_file_that_cannot_be_written_is_refused_before_anything_is_sent(tmp_path):
    # It was found at the first rejected line, after the lines before it were sent: a rerun
    # sent them twice. Refused before Kafka is even asked (no broker here).
    lines = tmp_path / "in.ndjson"
    lines.write_text('{"id": "a"}\nnot json\n')
    found = subprocess.run(
        [PIPELINE, "produce", "t", str(lines), "--rejects", str(tmp_path / "no" / "r.ndjson")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"},
    )

    assert found.returncode == 2
    assert found.stderr.strip().splitlines() == [
        f"error: cannot write the rejects file {tmp_path / 'no' / 'r.ndjson'}: no folder "
        f"{tmp_path / 'no'}"
    ]


def test_an_env_file_that_is_not_utf8_is_one_line_naming_its_line_and_help_still_shows(tmp_path):
    # python-dotenv's UnicodeDecodeError was a traceback for every command, -h included.
    (tmp_path / ".env").write_bytes(b"PIPELINE_LOGS__LEVEL=INFO\nPIPELINE_SERVICE_NAME=caf\xe9\n")
    run = {"capture_output": True, "text": True, "timeout": 120, "cwd": tmp_path}

    command = subprocess.run([PIPELINE, "topics", "list"], **run)
    help_page = subprocess.run([PIPELINE, "produce", "-h"], **run)

    assert command.returncode == 2
    assert command.stderr.strip().splitlines() == [
        "error: .env is not UTF-8 (line 2 has the byte 0xe9): save it as UTF-8"
    ]
    assert help_page.returncode == 0, help_page.stderr
    assert "Usage: pipeline produce" in help_page.stdout


def test_only_a_list_or_map_setting_is_blamed_for_json_and_no_secret_is_quoted():
    # A password starting with "{" or "[" was named "not valid JSON" instead of the list
    # setting given a bare value, with the parser's reason about the password.
    found = subprocess.run(
        [PIPELINE, "topics", "list", "--all"],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "PIPELINE_GATEWAY__TRUSTED_PROXIES": "10.0.0.1",
            "PIPELINE_KAFKA__SASL_PASSWORD": "{S3cretPW",
            "PIPELINE_DATABASE__PASSWORD": "[x",
            "COLUMNS": "300",
        },
    )

    assert found.returncode == 2
    assert found.stderr.strip().splitlines() == [
        "error: invalid setting: PIPELINE_GATEWAY__TRUSTED_PROXIES: a list or map setting takes "
        """JSON, e.g. '["10.0.0.0/8"]' or '{"name": "value"}'"""
    ]
    assert "SASL" not in found.stderr and "S3cret" not in found.stderr


def test_any_other_file_the_system_refuses_is_an_error_line_naming_it():
    code = (
        "import sys; from pipeline.cli import main\n"
        "def fail(): raise OSError(36, 'File name too long', '/tmp/' + 'a' * 300)\n"
        "main.app = fail; main.run()"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )

    assert found.returncode == 2
    assert found.stderr.strip().splitlines() == [f"error: /tmp/{'a' * 300}: File name too long"]


def test_a_secret_settings_error_is_whole_and_names_no_part_of_the_secret():
    # "invalid setting elasticsearch.api_key: an API key ..." lost its "an" to the redaction
    # of "api_key: <value>"; a key with a line break was a traceback quoting it.
    lines = _refused_with("topics list", "PIPELINE_ELASTICSEARCH__API_KEY", "S3cr3t in two")

    assert lines == [
        "error: invalid setting elasticsearch.api_key (an API key is one word of printable "
        "characters, as Elasticsearch gives it: this one is empty, or holds a space or a "
        "control character)"
    ]
