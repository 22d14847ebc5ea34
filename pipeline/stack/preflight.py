"""Checks made before starting anything, each failing with one clear sentence."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.errors import PipelineError
from pipeline.settings import masked_url


class StackError(PipelineError):
    """The local stack cannot be fetched, started, checked or stopped."""


@dataclass(frozen=True)
class Java:
    executable: Path
    home: Path
    major: int


_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


def parse_java_major(version_output: str) -> int:
    """The major version from ``java -version`` output (``1.8.0_x`` -> 8, ``17.0.15`` -> 17)."""
    match = _VERSION.search(version_output)
    if match is None:
        raise StackError(f"cannot read the Java version from: {version_output.strip()[:200]!r}")
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:
        return int(match.group(2))
    return major


def find_java(minimum: int = 17) -> Java:
    """The Java to run Kafka and Elasticsearch: ``$JAVA_HOME/bin/java``, else ``java`` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate is None or not candidate.exists():
        found = shutil.which("java")
        if found is None:
            if candidate is not None:
                raise StackError(
                    f"Java {minimum} not found: JAVA_HOME is {java_home}, which has no bin/java, "
                    f"and there is no java on PATH; point JAVA_HOME at a JDK {minimum}+"
                )
            raise StackError(f"Java {minimum} not found: install a JDK {minimum}+ or set JAVA_HOME")
        candidate = Path(found).resolve()
    try:
        result = subprocess.run(
            [str(candidate), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        raise StackError(
            f"Java {minimum} not found: {candidate} -version did not answer within 30 s; "
            f"point JAVA_HOME at a JDK {minimum}+"
        ) from None
    except OSError as error:  # not executable, not a program
        raise StackError(
            f"Java {minimum} not found: {candidate} cannot be run ({error.strerror or error}); "
            f"point JAVA_HOME at a JDK {minimum}+"
        ) from None
    try:
        major = parse_java_major(result.stderr + result.stdout)
    except StackError as error:
        raise StackError(f"{candidate} -version: {error}") from None
    if major < minimum:
        raise StackError(
            f"Java {minimum} not found: {candidate} is Java {major}; "
            f"install a JDK {minimum}+ or point JAVA_HOME at one"
        )
    return Java(executable=candidate, home=candidate.parent.parent, major=major)


def find_mvn() -> Path:
    found = shutil.which("mvn")
    if found is None:
        raise StackError(
            "mvn not found: install Maven (apt-get install maven) to fetch Kafka and Elasticsearch"
        )
    return Path(found)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def split_host_port(address: str) -> tuple[str, int]:
    """``"127.0.0.1:9092"`` -> ``("127.0.0.1", 9092)``; URLs are accepted (``http://h:9200``,
    with a user and password before the host, or without a port: their scheme's)."""
    if "://" in address:
        try:
            parts = urlsplit(address)
            url_host, url_port = parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme)
        except ValueError:  # a port that is no number, a bracket not closed
            url_host = url_port = None
        if url_host and url_port is not None:
            return url_host, url_port
        raise StackError(f"expected scheme://host:port, got {masked_url(address)!r}")
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise StackError(f"expected host:port, got {address!r}")
    return host.strip("[]"), int(port)


def is_local_host(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def port_answers(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def ensure_port_free(host: str, port: int, purpose: str, setting: str) -> None:
    """A :class:`StackError` naming ``setting`` (the variable that moves it) if ``port`` is
    taken."""
    if port_answers(host, port):
        raise StackError(
            f"port {port} is taken (needed for {purpose} on {host}); free it or set {setting}"
        )
