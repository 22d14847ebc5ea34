"""Names and values that are not text, hold control characters or are too long: one line and
exit code 2 before any connection, never a crash (a segfault, an abort) or a traceback.

Run as a user runs the commands (the console script, argv's bytes): a name that is not UTF-8
crashed the Kafka client, which would take the test process with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: The console script, as a user runs it (installed beside this interpreter).
PIPELINE = str(Path(sys.executable).with_name("pipeline"))
#: Bytes that are not UTF-8 (argv's, given to Python as surrogates).
BAD = "fx1\udcff\udcfe"
CONTROL = "fx1\x01\n\x1b[31mred"
LONG = "fx1." + "a" * 100_000


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command, with nothing to reach: were a check missing, it would fail elsewhere."""
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("PIPELINE_")},
        "COLUMNS": "200",
        "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "PIPELINE_DATABASE__URL": f"sqlite:///{tmp_path}/pipeline.db",
        "PIPELINE_ELASTICSEARCH__URL": "http://127.0.0.1:1",
    }
    return subprocess.run(
        [PIPELINE, *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
        env=env,
        cwd=tmp_path,
    )


def _one_line(found: subprocess.CompletedProcess[str]) -> str:
    assert found.returncode == 2, found.stderr[-2000:]
    lines = found.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "\x1b" not in lines[0] and "\x01" not in lines[0]
    assert len(lines[0]) < 400
    return lines[0]


@pytest.fixture
def events(tmp_path: Path) -> Path:
    path = tmp_path / "ev.ndjson"
    path.write_text('{"id": "a"}\n{"x": 2}\n')
    return path


@pytest.mark.parametrize(
    ("args", "said"),
    [
        # a header name that is not UTF-8: a segfault in the Kafka client
        (["-H", f"{BAD}=1"], "Invalid value for '--header' / '-H': 'fx1\\udcff\\udcfe=1' is not"),
        (["-H", f"x={BAD}"], "Invalid value for '--header' / '-H': 'x=fx1\\udcff\\udcfe' is not"),
        (["-H", "a\x1bb=1"], "Invalid value for '--header' / '-H': the name of 'a\\x1bb=1' holds"),
        (["--key-field", BAD], "Invalid value for '--key-field': is not UTF-8 text"),
        (["--key-from", BAD], "Invalid value for '--key-from': is not UTF-8 text"),
    ],
)
def test_produce_refuses_headers_and_key_paths_that_are_not_text(tmp_path, events, args, said):
    extra = [] if args[0].startswith("--key") else ["--key-field", "id"]
    assert said in _one_line(_run(tmp_path, "produce", "fx1.t", str(events), *extra, *args))


def test_produce_shows_a_file_name_with_control_characters_escaped(tmp_path):
    missing = str(tmp_path / "fx1\x01\n.ndjson")
    said = _one_line(_run(tmp_path, "produce", "fx1.t", missing))
    assert said == f"error: input {missing!r} does not exist"


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (BAD, "is not UTF-8 text"),  # the Kafka client aborted the process
        (CONTROL, "holds a control character ('\\x01' at 4)"),
        (LONG, "is 100,004 bytes long; Kafka takes at most 32,767"),
    ],
)
@pytest.mark.parametrize(
    ("command", "option"),
    [
        (["record", "fx1.t", "-o", "x.ndjson", "--until-end", "--from-group"], "--from-group"),
        (["logs", "ship", "--until-idle", "2", "--group"], "--group"),
    ],
)
def test_a_consumer_group_that_is_not_a_name_kafka_takes_is_a_usage_error(
    tmp_path, command, option, value, said
):
    assert f"Invalid value for '{option}': {said}" in _one_line(_run(tmp_path, *command, value))


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["saga", "list", "--name", BAD], "Invalid value for '--name': is not UTF-8 text"),
        (["saga", "show", BAD], "is not UTF-8 text"),
        (["saga", "retry", BAD], "is not UTF-8 text"),
        (["saga", "resolve", BAD, "--note", "done"], "is not UTF-8 text"),
        (["saga", "resolve", "s-1", "--note", BAD], "Invalid value for '--note': is not UTF-8"),
        (["gateway", "keys", "revoke", BAD], "is not UTF-8 text"),
        (["gateway", "--host", BAD], "Invalid value for '--host': is not UTF-8 text"),
        (["gateway", "--host", CONTROL], "Invalid value for '--host': holds a control character"),
        # A label empty or over 63 characters: a traceback from the event loop's look-up.
        # A 100 kB name was echoed whole: "0 aaa...aaa sagas in all", "no API key named ...".
        (["saga", "list", "--name", LONG], "is 100,004 characters long; at most 255"),
        (["saga", "show", LONG], "is 100,004 characters long; at most 255"),
        (["gateway", "keys", "revoke", LONG], "a key name is 1 to 128 letters"),
        (["gateway", "--host", "a..b"], "'a..b': the host name has an empty label"),
        (["gateway", "--host", "a" * 64 + ".example"], "empty label or one over 63 characters"),
        (
            ["dashboards", "import", "--kibana-url", "http://a..b:5601"],
            "the host name has an empty label or one over 63 characters, in 'http://a..b:5601'",
        ),
    ],
)
def test_ids_names_and_hosts_that_are_not_text_are_usage_errors(tmp_path, args, said):
    found = _one_line(_run(tmp_path, *args))
    assert said in found
    assert "not readable by this version" not in found


@pytest.mark.parametrize("command", ["inspect", "redrive", "discard"])
@pytest.mark.parametrize(
    ("topic", "said"),
    [
        (CONTROL, "'fx1\\x01\\n\\x1b[31mred' is not a Kafka topic name"),
        (LONG, "'... (100,004 characters) is not a Kafka topic name"),
    ],
)
def test_dlq_commands_refuse_a_topic_kafka_would_refuse(tmp_path, command, topic, said):
    assert said in _one_line(_run(tmp_path, "dlq", command, topic))


def test_an_alias_that_is_not_an_index_name_is_refused_before_elasticsearch(tmp_path):
    said = _one_line(_run(tmp_path, "dashboards", "template", "--alias", "fx1\x01"))
    assert "Invalid value for '--alias': holds a control character ('\\x01' at 4)" in said
    said = _one_line(_run(tmp_path, "dashboards", "export", "--alias", "Logs"))
    assert "Invalid value for '--alias': 'Logs' is not an Elasticsearch index name" in said


def test_a_kibana_url_whose_port_does_not_read_is_refused_up_front(tmp_path):
    said = _one_line(
        _run(tmp_path, "dashboards", "import", "--kibana-url", "http://127.0.0.1:99999")
    )
    assert said.startswith(
        "error: Invalid value for '--kibana-url': expected http(s)://host[:port]"
    )


def test_an_export_to_a_file_that_is_not_a_folder_says_so(tmp_path):
    said = _one_line(_run(tmp_path, "dashboards", "export", "--out", "/dev/full"))
    assert said == (
        "error: cannot write to /dev/full: it is not a folder (give the folder to write the two "
        "files to)"
    )


@pytest.mark.parametrize(
    "args",
    [
        ["saga", "list", "--state", LONG],
        ["saga", "graph", LONG],
        ["consume", LONG],
        ["logs", "search", "--since", LONG],
    ],
)
def test_an_error_quoting_a_100_kb_value_is_one_line_of_at_most_a_thousand_characters(
    tmp_path, args
):
    # Each quoted the whole value back: a 100 kB line.
    found = _run(tmp_path, *args)
    [said] = found.stderr.strip().splitlines()
    assert found.returncode in (1, 2) and said.startswith("error: ")
    assert len(said) <= 1_100 and "characters left out" in said, said[:200]
