"""``pipeline gateway keys rotate`` (a real SQLite database): the new key printed once, alone on
stdout; ``list`` showing until when the key before is valid (never a key); ``revoke`` naming the
gateways' own refresh setting, not this command's; bad input one line and exit code 2."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.database import build_engine
from pipeline.errors import PipelineError
from pipeline.settings import DatabaseSettings
from producers.gateway.key_table import load_keys
from producers.gateway.keys import KeyRing

PIPELINE = str(Path(sys.executable).with_name("pipeline"))


def keys(url: str, *args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(
        app,
        ["gateway", "keys", *args],
        env={"PIPELINE_DATABASE__URL": url, "COLUMNS": "200", **(env or {})},
    )


def ring(url: str) -> KeyRing:
    engine = build_engine(DatabaseSettings(url=url), must_exist=True)
    try:
        return KeyRing(load_keys(engine))
    finally:
        engine.dispose()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/pipeline.db"


def test_rotate_prints_a_new_key_once_and_the_old_one_stays_valid_until_a_time_list_shows(url):
    old = keys(url, "add", "shop", "--types", "place_order").stdout.strip()

    rotated = keys(url, "rotate", "shop", "--keep-old-for", "2h")
    listed = keys(url, "list")

    assert rotated.exit_code == 0, rotated.output
    new = rotated.stdout.strip()
    assert new.startswith(old[:21]) and new != old and "\n" not in new  # alone on stdout
    assert new not in rotated.stderr
    said = " ".join(rotated.stderr.split())
    assert (
        "API key 'shop' rotated: running gateways take the new key within their "
        "PIPELINE_GATEWAY__KEY_REFRESH_S (5 s by default), and the one before it stays valid "
        "for 2h, until "
    ) in said
    known = ring(url)
    assert known.authenticate(old) is not None and known.authenticate(new) is not None
    assert listed.exit_code == 0, listed.output
    assert "old key valid until" in listed.stdout
    [record] = load_keys(build_engine(DatabaseSettings(url=url), must_exist=True))
    assert record.previous_until is not None
    assert record.previous_until.strftime("%Y-%m-%d %H:%M:%S UTC") in listed.stdout
    assert old not in listed.output and new not in listed.output
    assert old[21:] not in listed.output and new[21:] not in listed.output


def test_rotate_with_no_grace_refuses_the_old_key_and_list_shows_none_valid(url):
    old = keys(url, "add", "shop", "--types", "place_order").stdout.strip()

    rotated = keys(url, "rotate", "shop", "--keep-old-for", "0")

    assert rotated.exit_code == 0, rotated.output
    assert (
        "running gateways take the new key, and refuse the one before it, within their "
        "PIPELINE_GATEWAY__KEY_REFRESH_S (5 s by default): no grace period"
    ) in " ".join(rotated.stderr.split())
    assert ring(url).authenticate(old) is None
    assert ring(url).authenticate(rotated.stdout.strip()) is not None
    row = keys(url, "list").stdout.splitlines()
    assert [line for line in row if "shop" in line and "UTC" in line]
    assert not [line for line in row if line.count("UTC") > 2]  # created, rotated; no "until"


def test_revoke_names_the_gateways_setting_and_its_default_not_this_commands_value(url):
    keys(url, "add", "shop", "--types", "place_order")

    # This command's own setting says nothing of the running gateways'.
    revoked = keys(url, "revoke", "shop", env={"PIPELINE_GATEWAY__KEY_REFRESH_S": "1"})

    assert revoked.exit_code == 0, revoked.output
    said = " ".join(revoked.stderr.split()).split(".db ", 1)[1]  # after "database: ..."
    assert said == (
        "API key 'shop' revoked (its key before a rotation too): running gateways refuse it "
        "within their PIPELINE_GATEWAY__KEY_REFRESH_S (5 s by default; one that cannot read the "
        "database refuses every key past its PIPELINE_GATEWAY__KEYS_MAX_STALE_S, 60 s by default)"
    )


def test_list_of_a_keys_table_older_than_this_version_says_to_migrate_it(url, tmp_path):
    keys(url, "add", "shop", "--types", "place_order")
    with sqlite3.connect(tmp_path / "pipeline.db") as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0008_sagas_namespace'")
        for column in ("rotated_at", "previous_until", "previous_secret_sha256"):
            connection.execute(f"ALTER TABLE pipeline_gateway_keys DROP COLUMN {column}")

    listed = keys(url, "list")

    assert isinstance(listed.exception, PipelineError), listed.output
    message = str(listed.exception)
    assert message.startswith(f"the API keys' table in {url} is older than this version")
    assert "migrate it (`pipeline db migrate`" in message and "\n" not in message


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("PIPELINE_")},
        "COLUMNS": "200",
        "PIPELINE_DATABASE__URL": f"sqlite:///{tmp_path}/pipeline.db",
    }
    return subprocess.run(
        [PIPELINE, "gateway", "keys", *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
        env=env,
        cwd=tmp_path,
    )


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--keep-old-for", "1y"], "'1y': expected 0 or a duration such as 90s, 30m, 24h"),
        (["--keep-old-for", "-1h"], "'-1h': expected 0 or a duration"),
        (["--keep-old-for", "31d"], "'31d' is longer than 30 days"),
        (["--keep-old-for", "9" * 40 + "d"], "expected 0 or a duration"),
        (["--keep-old-for", ""], "expected 0 or a duration"),
        ([], "no API key named 'ghost'"),
    ],
    ids=["unit", "negative", "too long", "huge", "empty", "no such key"],
)
def test_bad_rotations_are_one_line_and_exit_code_2(tmp_path, args, said):
    assert _run(tmp_path, "add", "shop", "--types", "place_order").returncode == 0
    name = "ghost" if not args else "shop"

    found = _run(tmp_path, "rotate", name, *args)

    assert found.returncode == 2, found.stderr[-2000:]
    lines = found.stderr.strip().splitlines()
    errors = [line for line in lines if not line.startswith("database: ")]  # the usual note
    assert len(errors) == 1 and said in errors[0], lines
    assert len(errors[0]) < 400 and "Traceback" not in found.stderr
    assert found.stdout == ""


def test_rotating_a_revoked_key_is_one_line_and_exit_code_2(tmp_path):
    _run(tmp_path, "add", "shop", "--types", "place_order")
    _run(tmp_path, "revoke", "shop")

    found = _run(tmp_path, "rotate", "shop")

    assert found.returncode == 2
    assert found.stderr.strip().splitlines()[1:] == [
        "error: the API key 'shop' is revoked: a revoked key is not rotated (add a new key, "
        "under another name: names are never reused)"
    ]
    assert found.stdout == ""
