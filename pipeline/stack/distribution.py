"""Fetching Apache Kafka and Elasticsearch from Maven Central with ``mvn``.

Kafka publishes no server tarball on Maven Central, but its server jars are there: we let Maven
resolve ``kafka_<scala>`` (broker, KRaft controller, storage tool) and ``kafka-tools`` (the perf
tools) with their runtime dependencies into one ``libs/`` folder and run the main classes from it.
Elasticsearch publishes ``integ-test-zip``, the server core without bundled JDK or extra modules.

Both land in ``<stack home>/dist/``; a ``.complete`` marker makes a half-done fetch visible.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.stack.preflight import StackError

_MARKER = ".complete"


@dataclass(frozen=True)
class KafkaDistribution:
    version: str
    libs: Path

    @property
    def classpath(self) -> str:
        return str(self.libs / "*")


@dataclass(frozen=True)
class ElasticsearchDistribution:
    version: str
    home: Path

    @property
    def launcher(self) -> Path:
        return self.home / "bin" / "elasticsearch"


def kafka_pom(kafka_version: str, scala_version: str) -> str:
    """A throwaway POM whose runtime dependencies are a runnable Kafka broker and its tools."""
    dependencies = [
        ("org.apache.kafka", f"kafka_{scala_version}", kafka_version),
        ("org.apache.kafka", "kafka-tools", kafka_version),
        # Kafka 3.x logs through slf4j 1.7 to reload4j (log4j 1 API), as its own tarball does.
        ("org.slf4j", "slf4j-reload4j", "1.7.36"),
    ]
    body = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in dependencies
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
        "  <modelVersion>4.0.0</modelVersion>\n"
        "  <groupId>local.pipeline</groupId><artifactId>kafka-dist</artifactId>"
        f"<version>{kafka_version}</version>\n"
        f"  <dependencies>\n{body}\n  </dependencies>\n"
        "</project>\n"
    )


def _run_mvn(mvn: Path, args: list[str], cwd: Path, what: str) -> None:
    command = [str(mvn), "--batch-mode", "--quiet", *args]
    try:
        result = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=1800, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise StackError(f"fetching {what} with mvn timed out after 30 minutes") from error
    if result.returncode != 0:
        tail = " | ".join((result.stdout + result.stderr).strip().splitlines()[-5:])
        raise StackError(f"fetching {what} with mvn failed (exit {result.returncode}): {tail}")


def fetch_kafka(
    mvn: Callable[[], Path], dist_root: Path, version: str, scala_version: str
) -> KafkaDistribution:
    """Kafka's jars in ``dist_root/kafka-<version>/libs``, fetched once (``mvn`` finds Maven,
    asked only when there is something to fetch)."""
    target = dist_root / f"kafka-{version}"
    distribution = KafkaDistribution(version=version, libs=target / "libs")
    if (target / _MARKER).exists():
        return distribution
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    (target / "pom.xml").write_text(kafka_pom(version, scala_version))
    _run_mvn(
        mvn(),
        [
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={distribution.libs}",
        ],
        cwd=target,
        what=f"Kafka {version}",
    )
    (target / _MARKER).write_text(version)
    return distribution


def fetch_elasticsearch(
    mvn: Callable[[], Path], dist_root: Path, version: str
) -> ElasticsearchDistribution:
    """Elasticsearch's integ-test-zip unpacked into ``dist_root/elasticsearch-<version>``, fetched
    once (``mvn`` finds Maven, asked only when there is something to fetch)."""
    target = dist_root / f"elasticsearch-{version}"
    distribution = ElasticsearchDistribution(version=version, home=target)
    if (target / _MARKER).exists():
        return distribution
    shutil.rmtree(target, ignore_errors=True)
    download = dist_root / "downloads"
    download.mkdir(parents=True, exist_ok=True)
    artifact = f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{version}:zip"
    _run_mvn(
        mvn(),
        ["dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={download}"],
        cwd=dist_root,
        what=f"Elasticsearch {version}",
    )
    archive = download / f"elasticsearch-{version}.zip"
    if not archive.exists():
        raise StackError(f"mvn reported success but {archive} is missing")
    unpack_zip(archive, dist_root)
    if not distribution.launcher.exists():
        raise StackError(f"{archive} did not contain bin/elasticsearch")
    (target / _MARKER).write_text(version)
    return distribution


def unpack_zip(archive: Path, destination: Path) -> None:
    """Extract keeping each entry's Unix mode (zipfile drops it; the launch scripts need +x).

    Written by hand because neither zipfile nor shutil.unpack_archive restores modes, and the
    ``unzip`` program is not on every machine. Everything is made readable by all, so a
    dedicated Elasticsearch user can run the distribution that root unpacked.
    """
    root = destination.resolve()
    with zipfile.ZipFile(archive) as bundle:
        for info in bundle.infolist():
            path = (destination / info.filename).resolve()
            if not path.is_relative_to(root):
                raise StackError(f"{archive} has an entry outside its folder: {info.filename}")
            bundle.extract(info, destination)
            mode = (info.external_attr >> 16) & 0o777
            if info.is_dir():
                os.chmod(path, 0o755)
            else:
                mode = mode or 0o644
                if mode & stat.S_IXUSR:  # executable for its owner: executable for all
                    mode |= stat.S_IXGRP | stat.S_IXOTH
                os.chmod(path, mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
