import stat
import zipfile
from pathlib import Path

import pytest

from pipeline.stack.distribution import fetch_elasticsearch, fetch_kafka, unpack_zip
from pipeline.stack.preflight import StackError


def _entry(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFREG | mode) << 16
    return info


def test_unpack_zip_keeps_execute_bits_and_makes_files_readable_by_all(tmp_path):
    archive = tmp_path / "dist.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr(_entry("es/bin/elasticsearch", 0o750), "#!/bin/sh\n")
        bundle.writestr(_entry("es/config/jvm.options", 0o640), "-Xms1g\n")
    unpack_zip(archive, tmp_path / "out")
    launcher = (tmp_path / "out/es/bin/elasticsearch").stat().st_mode & 0o777
    options = (tmp_path / "out/es/config/jvm.options").stat().st_mode & 0o777
    assert launcher == 0o755  # the Elasticsearch user, not the owner, runs it
    assert options == 0o644
    assert (tmp_path / "out/es/bin").stat().st_mode & 0o777 == 0o755


def test_unpack_zip_refuses_entries_outside_the_destination(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr(_entry("../escaped", 0o644), "x")
    with pytest.raises(StackError, match="outside its folder"):
        unpack_zip(archive, tmp_path / "out")
    assert not (tmp_path / "escaped").exists()


def _no_maven() -> Path:
    raise AssertionError("Maven was looked for, though nothing was to be fetched")


def test_a_distribution_fetched_before_needs_no_maven(tmp_path):
    for name in ("kafka-3.9.1", "elasticsearch-8.15.0"):
        (tmp_path / name).mkdir()
        (tmp_path / name / ".complete").write_text("done")

    kafka = fetch_kafka(_no_maven, tmp_path, "3.9.1", "2.13")
    elasticsearch = fetch_elasticsearch(_no_maven, tmp_path, "8.15.0")

    assert kafka.libs == tmp_path / "kafka-3.9.1" / "libs"
    assert elasticsearch.home == tmp_path / "elasticsearch-8.15.0"


def test_a_distribution_not_fetched_yet_asks_for_maven(tmp_path):
    def missing_maven() -> Path:
        raise StackError("mvn not found")

    with pytest.raises(StackError, match="mvn not found"):
        fetch_kafka(missing_maven, tmp_path, "3.9.1", "2.13")
