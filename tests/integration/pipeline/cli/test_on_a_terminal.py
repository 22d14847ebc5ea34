"""The commands with a progress bar, run on a terminal as a person runs them (a pseudo-terminal
made by util-linux's ``script``): they finish with their summary. On a terminal rich's progress
bar swaps ``sys.stderr`` for a proxy of the console, and the console wrote to that proxy, so
produce, record and replay hung for ever there (only kill -9 ended them)."""

from __future__ import annotations

import json
import shlex
import subprocess

from tests.support.processor_runs import PIPELINE


def on_a_terminal(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``pipeline *args`` on a pseudo-terminal; what the terminal showed, and the exit code."""
    command = " ".join(shlex.quote(part) for part in (PIPELINE, *args))
    return subprocess.run(
        ["script", "--quiet", "--return", "--command", command, "/dev/null"],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_produce_record_and_replay_finish_on_a_terminal(new_topic, tmp_path):
    source, target = new_topic(partitions=2), new_topic(partitions=2)
    lines = tmp_path / "orders.ndjson"
    lines.write_text("".join(json.dumps({"id": n, "sku": f"s{n % 3}"}) + "\n" for n in range(20)))
    recording = tmp_path / "recording.ndjson"

    produced = on_a_terminal("produce", source, str(lines), "--key-field", "sku")
    assert produced.returncode == 0, produced.stdout
    recorded = on_a_terminal(
        "record", source, "--from-beginning", "--until-end", "-o", str(recording)
    )
    assert recorded.returncode == 0, recorded.stdout
    replayed = on_a_terminal("replay", str(recording), "-t", target)
    assert replayed.returncode == 0, replayed.stdout

    assert len(recording.read_text().splitlines()) == 20
    assert "20" in produced.stdout and "20" in replayed.stdout
