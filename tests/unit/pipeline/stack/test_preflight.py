import socket
import subprocess

import pytest

from pipeline.stack import preflight
from pipeline.stack.preflight import (
    StackError,
    ensure_port_free,
    find_java,
    is_local_host,
    parse_java_major,
    split_host_port,
)


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "11.0.22" 2024-01-16', 11),
    ],
)
def test_parse_java_major_reads_modern_and_legacy_version_strings(output, major):
    assert parse_java_major(output) == major


def test_parse_java_major_rejects_unreadable_output():
    with pytest.raises(StackError, match="cannot read the Java version"):
        parse_java_major("bash: java: command not found")


def test_find_java_names_the_version_needed_when_there_is_no_java(monkeypatch, tmp_path):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError, match=r"^Java 17 not found"):
        find_java()


def test_find_java_says_when_java_home_points_where_there_is_no_java(monkeypatch, tmp_path):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "nonexistent"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StackError) as refused:
        find_java()
    assert str(refused.value).startswith("Java 17 not found: JAVA_HOME is ")
    assert f"{tmp_path / 'nonexistent'}, which has no bin/java" in str(refused.value)


def _fake_java(monkeypatch, tmp_path, script):
    """A JAVA_HOME whose bin/java is the shell ``script``; its path."""
    fake = tmp_path / "jdk" / "bin" / "java"
    fake.parent.mkdir(parents=True)
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    return fake


def test_find_java_refuses_an_old_java(monkeypatch, tmp_path):
    _fake_java(monkeypatch, tmp_path, "echo 'openjdk version \"11.0.2\" 2019-01-15' >&2")
    with pytest.raises(StackError, match="is Java 11"):
        find_java()


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9092", ("127.0.0.1", 9092)),
        ("http://127.0.0.1:9200", ("127.0.0.1", 9200)),
        ("https://es.example:443/", ("es.example", 443)),
        ("[::1]:9092", ("::1", 9092)),
        ("http://user:pa55@127.0.0.1:9200", ("127.0.0.1", 9200)),
        ("https://es.example", ("es.example", 443)),
        ("http://[2001:db8::1]", ("2001:db8::1", 80)),
    ],
)
def test_split_host_port(address, expected):
    assert split_host_port(address) == expected


def test_an_unreadable_url_is_refused_without_its_password():
    with pytest.raises(StackError) as refused:
        split_host_port("http://user:pa55@host:nine")
    assert "pa55" not in str(refused.value)
    assert "http://[REDACTED]@host:nine" in str(refused.value)


def test_split_host_port_rejects_an_address_without_port():
    with pytest.raises(StackError, match="expected host:port"):
        split_host_port("localhost")


def test_only_loopback_addresses_are_local():
    assert is_local_host("127.0.0.1") and is_local_host("localhost") and is_local_host("127.1.2.3")
    assert not is_local_host("10.0.0.5")
    assert not is_local_host("kafka")


def test_unit_tests_have_no_network():
    # The plugin disables sockets for tests under tests/unit.
    with pytest.raises(Exception, match=r"[Ss]ocket"), pytest.warns(UserWarning):
        socket.create_connection(("127.0.0.1", 9), timeout=0.1)


def test_a_taken_port_names_the_setting_that_moves_it(monkeypatch):
    monkeypatch.setattr(preflight, "port_answers", lambda host, port: True)

    with pytest.raises(StackError) as taken:
        ensure_port_free("127.0.0.1", 9093, "the Kafka controller", "PIPELINE_STACK__X_PORT")

    assert str(taken.value) == (
        "port 9093 is taken (needed for the Kafka controller on 127.0.0.1); free it or set "
        "PIPELINE_STACK__X_PORT"
    )


def test_find_java_says_when_java_does_not_answer(monkeypatch, tmp_path):
    # A java that hangs on -version: subprocess's TimeoutExpired was a traceback.
    fake = _fake_java(monkeypatch, tmp_path, "sleep 60")

    def timed_out(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], 30)

    monkeypatch.setattr("pipeline.stack.preflight.subprocess.run", timed_out)
    with pytest.raises(StackError) as refused:
        find_java()
    assert str(refused.value) == (
        f"Java 17 not found: {fake} -version did not answer within 30 s; "
        "point JAVA_HOME at a JDK 17+"
    )


def test_find_java_names_the_binary_whose_version_it_cannot_read(monkeypatch, tmp_path):
    fake = _fake_java(monkeypatch, tmp_path, "echo garbage")
    with pytest.raises(StackError) as refused:
        find_java()
    assert str(refused.value) == f"{fake} -version: cannot read the Java version from: 'garbage'"
