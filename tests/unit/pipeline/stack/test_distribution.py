import stat
import zipfile

import pytest

from pipeline.stack.distribution import unpack_zip
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
