"""A plain confluent-kafka poll loop, the baseline of bench/scale_out.py's processing stage.

``python bench/scale_poll_worker.py TOPIC GROUP SLEEP_MS OUT``: joins ``GROUP`` on ``TOPIC``,
and for each message decodes the envelope (``pipeline.envelope.decode``, as the runtime does)
and waits ``SLEEP_MS`` (``time.sleep``: the same I/O-bound handler, one event at a time);
offsets are committed by librdkafka's auto-commit. Every 50 ms it writes ``{"handled",
"rounds": {run: [first, last, count]}}`` to ``OUT`` (replaced atomically), which the bench
reads: per round (the ``run`` in the events' data), when this loop handled its first and last
event of it, and how many; SIGTERM stops it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from pipeline.envelope import decode
from pipeline.kafka.clients import build_consumer
from pipeline.settings import PipelineSettings


def main() -> None:
    topic, group, sleep_ms, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), Path(sys.argv[4])
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    # As the processors in bench/scale_out.py: a 6 s session, a heartbeat every 1.2 s.
    consumer = build_consumer(
        PipelineSettings().kafka,
        group,
        **{"session.timeout.ms": 6000, "heartbeat.interval.ms": 1200},
    )
    consumer.subscribe([topic])
    handled, written = 0, 0.0
    rounds: dict[str, list[float]] = {}
    try:
        while not stopping:
            message = consumer.poll(0.05)
            if message is not None and message.error() is None:
                event = decode(message.value(), message.headers(), message.key())
                time.sleep(sleep_ms / 1000)
                handled += 1
                now = time.time()
                seen = rounds.setdefault(str(event.data.get("run")), [now, now, 0])
                seen[1], seen[2] = now, seen[2] + 1
            if time.monotonic() - written >= 0.05:
                written = time.monotonic()
                Path(f"{out}.tmp").write_text(json.dumps({"handled": handled, "rounds": rounds}))
                os.replace(f"{out}.tmp", out)
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
