"""The system users the servers run as when the stack is started by root (Elasticsearch and
PostgreSQL refuse to run as root): made when missing, given their state folders."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from pipeline.stack.preflight import StackError

__all__ = ["ensure_system_user", "hand_over"]


def ensure_system_user(user: str, purpose: str = "Elasticsearch") -> None:
    try:
        pwd.getpwnam(user)
        return
    except KeyError:
        pass
    result = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"cannot create the user {user} to run {purpose}: {result.stderr.strip()}")


def hand_over(home: Path, folder: Path, user: str) -> None:
    """Give the dedicated user its state folder, and a way through to it."""
    entry = pwd.getpwnam(user)
    for parent in (home, home / "state"):
        parent.chmod(0o755)
    for root, dirs, files in os.walk(folder):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
