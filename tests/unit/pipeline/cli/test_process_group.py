"""``pipeline process --group NAME``: the consumer group a copy of a processor reads as (a test,
a shadow run), checked as a name before anything connects, and handed to the runtime."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.cli.process import GROUP_CHARACTERS, consumer_group

#: The console script, as a user runs it (installed beside this interpreter).
PIPELINE = str(Path(sys.executable).with_name("pipeline"))
SPEC = "tests.support.effects_processor:processor"


@pytest.mark.parametrize(
    "name",
    ["fx1-payments.test-0a1b2c3d", "fx1_shadow", "A.b-C_9", "x" * GROUP_CHARACTERS],
)
def test_a_group_of_a_processor_names_characters_is_taken_as_it_is(name):
    assert consumer_group(name) == name


def test_no_group_given_is_none_the_processors_name_then():
    assert consumer_group(None) is None


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("", "must not be empty"),
        ("fx1 payments", "'fx1 payments' holds ' ': a group takes letters, digits, '.', '_'"),
        ("fx1\x1b[31m", "'fx1\\x1b[31m' holds '\\x1b'"),
        ("fx1\udcff", "'fx1\\udcff' holds '\\udcff'"),  # argv bytes that are not UTF-8
        ("fx1/payments", "holds '/'"),
        ("x" * (GROUP_CHARACTERS + 1), "is 256 characters long; at most 255"),
    ],
)
def test_a_group_that_is_no_name_is_refused_saying_why(name, said):
    with pytest.raises(typer.BadParameter) as refused:
        consumer_group(name)

    assert said in str(refused.value)


def test_a_bad_group_is_one_line_and_exit_code_2_before_anything_connects(tmp_path):
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("PIPELINE_")},
        "COLUMNS": "200",
        "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",  # nothing there: were the check
        "PIPELINE_DATABASE__URL": f"sqlite:///{tmp_path}/pipeline.db",  # missing, it would say
    }
    found = subprocess.run(
        [PIPELINE, "process", SPEC, "--group", "fx1 payments"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=Path(__file__).resolve().parents[4],
    )

    assert found.returncode == 2, found.stderr
    assert found.stderr.strip().splitlines() == [
        "error: Invalid value for '--group': 'fx1 payments' holds ' ': a group takes letters, "
        "digits, '.', '_' and '-', as a processor's name does (see pipeline process -h)"
    ]
    assert not (tmp_path / "pipeline.db").exists()


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """What ``run_processor`` is called with; no broker (the topic check is replaced too)."""
    calls: list[dict[str, object]] = []
    monkeypatch.setenv("PIPELINE_DATABASE__URL", f"sqlite:///{tmp_path}/pipeline.db")
    monkeypatch.setenv("EFFECTS_TOPIC", "fx1.effects")
    monkeypatch.setattr("pipeline.kafka.clients.build_admin", lambda kafka: object())
    monkeypatch.setattr(
        "pipeline.topics.admin.describe_cluster_topics", lambda admin, topics, bootstrap: None
    )
    monkeypatch.setattr(
        "pipeline.processing.faust.app.run_processor",
        lambda processor, settings, **options: calls.append(
            {"processor": processor.name, **options}
        ),
    )
    return calls


def test_the_group_given_is_handed_to_the_runtime(runtime):
    result = CliRunner().invoke(app, ["process", SPEC, "--group", "fx1-effects.shadow"])

    assert result.exit_code == 0, result.output
    [call] = runtime
    assert call == {"processor": call["processor"], "group": "fx1-effects.shadow"}


def test_without_a_group_the_runtime_reads_as_the_processors_name(runtime):
    result = CliRunner().invoke(app, ["process", SPEC])

    assert result.exit_code == 0, result.output
    [call] = runtime
    assert "group" not in call  # run_processor's default: the processor's name


def test_the_help_says_what_a_group_of_its_own_is_for():
    result = CliRunner().invoke(app, ["process", "--help"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())
    assert "--group" in text
    assert "an independent copy of a processor that reads every event itself" in text
    assert "Redrives of its dead letters go to this group" in text
