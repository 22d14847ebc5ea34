"""``pipeline saga`` on a SQLite database the broker-free harness filled with sagas."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.database import HEAD_REVISION, build_engine
from pipeline.errors import PipelineError
from pipeline.processing import Processor
from pipeline.processing.harness import PipelineHarness
from pipeline.sagas import Call, SagaDefinition, SagaRegistry, Step
from pipeline.sagas.orchestrator import SagaOrchestrator, orchestrator_processor
from pipeline.sagas.participant import Refuse, SagaParticipant
from pipeline.sagas.topics import SagaTopics
from pipeline.settings import DatabaseSettings, ProcessingSettings

REGISTRY_SPEC = "tests.unit.pipeline.cli.test_saga_cli:registry"


class Data(BaseModel):
    n: int


registry = SagaRegistry(
    [
        SagaDefinition(
            "Demo",
            version=1,
            data_model=Data,
            steps=[
                Step(
                    "first",
                    participant="worker",
                    action=lambda d: Call("Do", {"n": d.n}),
                    compensation=lambda d: Call("Undo", {"n": d.n}),
                    compensation_attempts=1,
                ),
                Step("second", participant="worker", action=lambda d: Call("Check", {"n": d.n})),
            ],
        )
    ]
)

worker = Processor("worker-service")
participant = SagaParticipant(worker, "worker")


@participant.command("Do")
def do(command, unit):
    return {}


@participant.command("Check")
def check(command, unit):
    if command.data["n"] % 2:
        raise Refuse("odd")
    return {}


@participant.command("Undo")
def undo(command, unit):
    raise Refuse("the undo service is down", retryable=True)


@pytest.fixture
def database(tmp_path: Path) -> str:
    return _sagas_in(tmp_path, {"saga-even": 2, "saga-odd": 3})


def pipeline(database: str, *args: str):
    return CliRunner().invoke(
        app, list(args), env={"PIPELINE_DATABASE__URL": database, "COLUMNS": "200"}
    )


def test_list_shows_sagas_by_state(database):
    result = pipeline(database, "saga", "list")
    assert result.exit_code == 0, result.output
    assert "saga-even" in result.output and "saga-odd" in result.output
    assert "2 sagas in all: compensation_failed 1, completed 1" in result.output
    only = pipeline(database, "saga", "list", "--state", "completed")
    assert "saga-even" in only.output and "saga-odd" not in only.output


def test_list_by_name_counts_only_that_saga(database):
    result = pipeline(database, "saga", "list", "--name", "Demo")
    assert "2 Demo sagas in all: compensation_failed 1, completed 1" in result.output
    other = pipeline(database, "saga", "list", "--name", "Other")
    assert other.exit_code == 0, other.output
    assert "0 Other sagas in all: none" in other.output


def test_show_gives_the_steps_and_the_timeline(database):
    result = pipeline(database, "saga", "show", "saga-odd")
    assert result.exit_code == 0, result.output
    assert "Demo v1 saga-odd: compensation_failed" in result.output
    assert "reason: second: odd" in result.output
    assert 'data: {"n": 3}' in result.output  # JSON, as the saga stores it
    assert "the undo service is down" in result.output  # the failed compensation's attempt
    assert "topics:" not in result.output  # the default namespace goes without saying
    assert "action failed" in result.output and "odd" in result.output
    # "Demo" is not the demo's registry (the default of --registry): the hint says to name one.
    assert "pipeline saga retry saga-odd --registry MODULE:ATTRIBUTE" in result.output
    assert "(the registry that defines Demo)" in result.output


def test_show_and_list_name_a_saga_systems_own_topic_namespace(database):
    orchestrator = SagaOrchestrator(registry, topics=SagaTopics("trips"))
    with Session(build_engine(DatabaseSettings(url=database))) as session, session.begin():
        orchestrator.start(session, "Demo", "saga-trip", {"n": 4})
    result = pipeline(database, "saga", "show", "saga-trip")
    assert result.exit_code == 0, result.output
    assert "topics: trips.* (its own namespace)" in result.output
    listed = pipeline(database, "saga", "list", "--namespace", "trips")
    assert "saga-trip" in listed.output and "saga-odd" not in listed.output
    assert "1 saga of namespace trips in all: running 1" in listed.output
    default = pipeline(database, "saga", "list", "--namespace", "saga")
    assert "saga-odd" in default.output and "saga-trip" not in default.output


def test_resolve_ends_a_stuck_saga_and_retry_refuses_a_finished_one(database):
    result = pipeline(
        database,
        "saga",
        "resolve",
        "saga-odd",
        "--note",
        "undone by hand",
        "--registry",
        REGISTRY_SPEC,
    )
    assert result.exit_code == 0, result.output
    assert "saga saga-odd is resolved" in result.output
    again = pipeline(database, "saga", "retry", "saga-odd", "--registry", REGISTRY_SPEC)
    assert again.exit_code != 0
    assert "only a saga in compensation_failed or confirmation_failed can be retried" in str(
        again.exception
    )


def test_show_writes_out_a_terminal_escape_from_a_note_instead_of_sending_it(database):
    note = "undone by hand \x1b[31mred\x1b]0;owned\x07"
    resolved = pipeline(
        database, "saga", "resolve", "saga-odd", "--note", note, "--registry", REGISTRY_SPEC
    )
    assert resolved.exit_code == 0, resolved.output

    shown = pipeline(database, "saga", "show", "saga-odd")

    assert shown.exit_code == 0, shown.output
    assert "\x1b" not in shown.output and "\x07" not in shown.output
    assert "undone by hand \\x1b[31mred\\x1b]0;owned\\x07" in shown.output


def test_list_refuses_a_namespace_no_saga_system_can_have(database):
    for bad in ("", "a b", "Trips"):
        result = pipeline(database, "saga", "list", "--namespace", bad)
        assert result.exit_code == 2, result.output
        assert "Invalid value for --namespace: saga topic namespace" in result.output


def test_retry_sends_the_failed_compensation_again(database):
    result = pipeline(database, "saga", "retry", "saga-odd", "--registry", REGISTRY_SPEC)
    assert result.exit_code == 0, result.output
    assert "saga saga-odd is compensating again" in result.output


def test_an_unknown_state_and_an_unknown_saga_are_one_line_errors(database):
    bad = pipeline(database, "saga", "list", "--state", "happy")
    assert bad.exit_code != 0 and "unknown state 'happy'" in str(bad.exception)
    missing = pipeline(database, "saga", "show", "nope")
    assert str(missing.exception) == "no saga nope in this database"  # as retry and resolve say
    empty = pipeline(database, "saga", "show", "")
    assert str(empty.exception) == "no saga '' in this database"


def test_prune_deletes_the_ended_sagas_and_keeps_a_stuck_one(database):
    kept = pipeline(database, "saga", "prune", "--older-than-days", "36500")
    assert kept.exit_code == 0, kept.output
    assert "0 sagas deleted that ended before" in kept.output

    counted = pipeline(database, "saga", "prune", "--older-than-days", "0", "--dry-run")
    assert counted.exit_code == 0, counted.output
    assert "1 saga would be deleted (dry run) that ended before" in counted.output
    assert "saga-even" in pipeline(database, "saga", "list").output  # still there

    result = pipeline(database, "saga", "prune", "--older-than-days", "0")
    assert result.exit_code == 0, result.output
    assert "1 saga deleted that ended before" in result.output
    listed = pipeline(database, "saga", "list")
    assert "saga-even" not in listed.output
    assert "1 saga in all: compensation_failed 1" in listed.output


def test_prune_without_a_retention_asks_for_an_age(database):
    result = CliRunner().invoke(
        app,
        ["saga", "prune"],
        env={"PIPELINE_DATABASE__URL": database, "PIPELINE_SAGAS__RETENTION_S": "null"},
    )
    assert result.exit_code != 0
    assert "give --older-than-days" in str(result.exception)


def test_graph_prints_mermaid():
    result = CliRunner().invoke(app, ["saga", "graph", "Demo", "--registry", REGISTRY_SPEC])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("flowchart TD\n")
    assert "  s0 --> s1\n" in result.output


def test_a_saga_the_default_registry_lacks_says_how_to_give_another():
    result = CliRunner().invoke(app, ["saga", "graph", "BookTrip"])

    assert result.exit_code != 0
    message = str(result.exception)
    assert message.startswith("no saga named 'BookTrip' in this registry")
    assert message.endswith("give the registry that defines it with --registry MODULE:ATTRIBUTE")


def test_a_registry_given_and_lacking_the_saga_gets_no_such_hint():
    result = CliRunner().invoke(app, ["saga", "graph", "BookTrip", "--registry", REGISTRY_SPEC])

    assert result.exit_code != 0
    assert "--registry" not in str(result.exception)


def test_ids_and_names_are_shown_as_they_are_not_read_as_markup(tmp_path):
    # "saga-[b]x[/b]" showed as "saga-x", which then named no saga.
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    engine = build_engine(DatabaseSettings(url=url))
    orchestrator = SagaOrchestrator(registry)
    harness = PipelineHarness([orchestrator_processor(orchestrator), worker], database=engine)
    orchestrator.clock = harness.clock
    with Session(engine) as session, session.begin():
        orchestrator.start(session, "Demo", "saga-[b]x[/b]", {"n": 3})
    harness.run_until_idle()
    harness.close()

    listed = pipeline(url, "saga", "list")
    shown = pipeline(url, "saga", "show", "saga-[b]x[/b]")

    assert "saga-[b]x[/b]" in listed.output
    assert "Demo v1 saga-[b]x[/b]: compensation_failed" in shown.output
    assert "pipeline saga retry saga-[b]x[/b]" in shown.output


def test_an_id_that_can_be_no_sagas_is_named_on_one_line_and_cut_short(database):
    result = pipeline(database, "saga", "show", "a\nb" + "x" * 250)  # (longer: a usage error)
    message = str(result.exception)
    assert result.exit_code != 0
    assert message.startswith("no saga 'a\\nbxxx") and message.endswith("... in this database")
    assert "\n" not in message and len(message) < 120


def test_show_counts_undo_attempts_apart_from_confirms(database):
    # A try/confirm/cancel step's confirms were counted as "undo attempts".
    result = pipeline(database, "saga", "show", "saga-odd")
    header = next(line for line in result.output.splitlines() if "undo attempts" in line)
    assert "confirm attempts" in header
    row = next(line for line in result.output.splitlines() if line.strip("│ ").startswith("first"))
    cells = [cell.strip() for cell in row.strip("│").split("│")]
    # first: its action once, no confirm, its compensation tried and refused (attempts: 1).
    assert cells[:5] == ["first", "compensation_failed", "1", "0", "1"], cells


def test_a_step_that_never_succeeded_shows_no_time(database):
    # saga-odd: "second" was refused, and the compensation of "first" keeps failing. Both
    # showed the time to their failure, which the docs say counts only successes.
    odd = _took(pipeline(database, "saga", "show", "saga-odd").output)
    even = _took(pipeline(database, "saga", "show", "saga-even").output)

    assert odd == {"first": "-", "second": "-"}
    assert "-" not in even.values() and set(even) == {"first", "second"}


def _took(output: str) -> dict[str, str]:
    """Each step's "took" cell of the steps table."""
    took = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if len(cells) == 6 and cells[0] in ("first", "second"):
            took[cells[0]] = cells[-1]
    return took


@pytest.mark.parametrize("note", [None, "  "], ids=["no note", "a blank note"])
def test_resolve_needs_a_note_of_what_was_done(database, note):
    args = ["saga", "resolve", "saga-odd", "--registry", REGISTRY_SPEC]
    result = pipeline(database, *args, *([] if note is None else ["--note", note]))

    assert result.exit_code == 2
    assert "--note" in result.output
    assert "compensation_failed" in pipeline(database, "saga", "list").output  # unchanged


def _at_0007(url: str) -> None:
    """The database as version 0007_sagas_next_resend left it: no namespace column."""
    from sqlalchemy import text

    engine = build_engine(DatabaseSettings(url=url))
    with engine.begin() as connection:
        connection.execute(
            text("UPDATE alembic_version SET version_num = '0007_sagas_next_resend'")
        )
        connection.execute(text("ALTER TABLE pipeline_sagas DROP COLUMN namespace"))
    engine.dispose()


def test_a_namespace_asked_of_an_older_schema_says_to_migrate_it_not_that_none_ran_sagas(
    database,
):
    # "no sagas in ...: no program that runs sagas has used this database yet", for a column
    # the database lacks (a substring test matched the table's name in the column's error).
    _at_0007(database)
    assert pipeline(database, "saga", "list").exit_code == 0  # reads no namespace

    result = pipeline(database, "saga", "list", "--namespace", "saga")

    message = str(result.exception)
    assert result.exit_code != 0 and isinstance(result.exception, PipelineError), result.output
    assert message.startswith(f"the schema of {database} is older than this version")
    assert f"(at revision 0007_sagas_next_resend, this version's is {HEAD_REVISION})" in message
    assert "no such column: pipeline_sagas.namespace" in message
    assert "migrate it by starting a program of this version that writes to it" in message
    assert "no program that runs sagas" not in message and "\n" not in message


def test_a_database_without_the_sagas_table_says_no_program_ran_sagas_there(tmp_path):
    import sqlite3

    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE other (x INTEGER)")
    url = f"sqlite:///{path}"

    for args in (["list"], ["list", "--namespace", "saga"], ["show", "s-1"]):
        result = pipeline(url, "saga", *args)
        assert str(result.exception) == (
            f"no sagas in {url}: no program that runs sagas has used this database yet"
        ), args


def test_a_stored_state_this_version_cannot_read_is_one_line_naming_the_saga(database):
    # A row whose state does not validate: `saga show` ended in pydantic's traceback.
    from sqlalchemy import text

    engine = build_engine(DatabaseSettings(url=database))
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO pipeline_sagas (saga_id, name, version, status, state, revision, "
                "created_at, updated_at, namespace) VALUES ('saga-bad', 'Demo', 1, 'running', "
                "'{}', 1, '2026-01-01 00:00:00', '2026-01-01 00:00:00', 'saga')"
            )
        )
    engine.dispose()

    shown = pipeline(database, "saga", "show", "saga-bad")
    listed = pipeline(database, "saga", "list")

    assert shown.exit_code != 0
    assert isinstance(shown.exception, PipelineError), shown.exception
    message = str(shown.exception)
    assert message.startswith(
        "saga saga-bad: its stored state is not readable by this version of the pipeline "
        "(saga_id: Field required and "
    )
    assert "\n" not in message
    assert listed.exit_code == 0, listed.output  # listed from its columns, as any other
    assert "saga-bad" in listed.output
    assert "3 sagas in all: compensation_failed 1, completed 1, running 1" in listed.output


def _sagas_in(tmp_path: Path, sagas: dict[str, int]) -> str:
    """A database with these sagas (id: n), run until idle: an odd n ends compensation_failed."""
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    engine = build_engine(DatabaseSettings(url=url))
    orchestrator = SagaOrchestrator(registry)
    harness = PipelineHarness(
        [orchestrator_processor(orchestrator), worker],
        database=engine,
        settings=ProcessingSettings(max_in_flight=1),
    )
    orchestrator.clock = harness.clock
    with Session(engine) as session, session.begin():
        for saga_id, n in sagas.items():
            orchestrator.start(session, "Demo", saga_id, {"n": n})
    harness.run_until_idle()
    harness.close()
    return url


@pytest.fixture
def stuck(tmp_path: Path) -> str:
    return _sagas_in(tmp_path, {"saga-odd": 3, "saga-odd-2": 5, "saga-even": 2})


def _states(url: str) -> dict[str, str]:
    listed = pipeline(url, "saga", "list")
    states = {}
    for line in listed.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        if len(cells) == 6 and cells[0].startswith("saga-"):
            states[cells[0]] = cells[2]
    return states


def test_list_says_when_more_sagas_match_than_it_shows(database):
    # It showed --max rows, and counted every saga below, with no word that some were hidden.
    cut = pipeline(database, "saga", "list", "--max", "1")
    whole = pipeline(database, "saga", "list", "--state", "compensation_failed", "--max", "1")

    assert cut.exit_code == 0, cut.output
    assert "showing the most recently changed of 2 sagas; --max N for more" in cut.stdout
    assert whole.exit_code == 0, whole.output
    assert "showing" not in whole.output  # its one match is shown


def test_list_shows_the_50_most_recently_changed_by_default_and_says_how_many_match(database):
    orchestrator = SagaOrchestrator(registry)
    with Session(build_engine(DatabaseSettings(url=database))) as session, session.begin():
        for number in range(52):
            orchestrator.start(session, "Demo", f"saga-run-{number:02d}", {"n": 2})

    result = pipeline(database, "saga", "list", "--state", "running")

    assert result.exit_code == 0, result.output
    assert result.stdout.count("saga-run-") == 50
    assert (
        "showing the 50 most recently changed of 52 running sagas; --max N for more"
        in result.stdout
    )
    assert "54 sagas in all: compensation_failed 1, completed 1, running 52" in result.stdout


def test_ids_only_prints_one_id_a_line_and_nothing_else(database):
    result = pipeline(database, "saga", "list", "--ids-only")
    stuck_only = pipeline(database, "saga", "list", "-s", "compensation_failed", "--ids-only")

    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.splitlines()) == ["saga-even", "saga-odd"]
    assert result.stdout.endswith("\n")
    assert stuck_only.stdout == "saga-odd\n"


def test_ids_only_says_on_stderr_that_more_match_than_it_printed(database):
    result = pipeline(database, "saga", "list", "--ids-only", "--max", "1")

    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1
    assert (
        "warning: showing the most recently changed of 2 sagas; --max N for more" in result.stderr
    )


def test_retry_takes_several_ids_and_says_what_each_is_now(stuck):
    result = pipeline(stuck, "saga", "retry", "saga-odd", "saga-odd-2", "--registry", REGISTRY_SPEC)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "saga saga-odd is compensating again",
        "saga saga-odd-2 is compensating again",
    ]
    assert _states(stuck) == {
        "saga-odd": "compensating",
        "saga-odd-2": "compensating",
        "saga-even": "completed",
    }


def test_a_saga_that_cannot_be_retried_is_an_error_line_and_the_others_go_on(stuck):
    args = ["saga-odd", "nope", "saga-even", "saga-odd-2", "--registry", REGISTRY_SPEC]

    result = pipeline(stuck, "saga", "retry", *args)

    assert result.exit_code == 1, result.output
    assert not isinstance(result.exception, PipelineError)  # said, not raised (exit code 2)
    assert result.stdout.splitlines() == [
        "saga saga-odd is compensating again",
        "saga saga-odd-2 is compensating again",  # after the two that failed
    ]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: no saga nope in this database",
        "error: saga saga-even is completed: only a saga in compensation_failed or "
        "confirmation_failed can be retried",
        "error: 2 of 4 sagas not retried",
    ]
    assert _states(stuck)["saga-odd-2"] == "compensating"


def test_resolve_takes_several_ids_each_with_the_note(stuck):
    result = pipeline(
        stuck,
        "saga",
        "resolve",
        "saga-odd",
        "saga-odd-2",
        "--note",
        "refunded by hand",
        "--registry",
        REGISTRY_SPEC,
    )

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "saga saga-odd is resolved",
        "saga saga-odd-2 is resolved",
    ]
    assert "refunded by hand" in pipeline(stuck, "saga", "show", "saga-odd-2").stdout


def test_resolve_of_several_fails_with_1_when_one_is_not_stuck(stuck):
    args = ["saga-even", "saga-odd", "--note", "by hand", "--registry", REGISTRY_SPEC]

    result = pipeline(stuck, "saga", "resolve", *args)

    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines() == ["saga saga-odd is resolved"]
    assert "error: 1 of 2 sagas not resolved" in result.stderr


def test_a_saga_id_given_twice_is_retried_once(stuck):
    result = pipeline(stuck, "saga", "retry", "saga-odd", "saga-odd", "--registry", REGISTRY_SPEC)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["saga saga-odd is compensating again"]


def test_an_id_that_can_be_no_sagas_among_several_is_a_usage_error_and_nothing_is_done(stuck):
    result = pipeline(stuck, "saga", "retry", "saga-odd", "x" * 300, "--registry", REGISTRY_SPEC)

    assert result.exit_code == 2, result.output
    assert "Invalid value for 'SAGA_ID': is 300 characters long; at most 255" in result.output
    assert _states(stuck)["saga-odd"] == "compensation_failed"


def test_a_database_that_fails_stops_several_and_says_how_many_were_not_tried(tmp_path):
    import sqlite3

    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE other (x INTEGER)")
    url = f"sqlite:///{path}"

    result = pipeline(url, "saga", "retry", "s-1", "s-2", "--registry", REGISTRY_SPEC)

    assert isinstance(result.exception, PipelineError), result.output
    assert str(result.exception) == (
        f"no sagas in {url}: no program that runs sagas has used this database yet"
    )
    assert "error: 2 sagas not retried, from s-1 on: the database failed" in result.stderr
