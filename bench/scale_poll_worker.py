"""A plain confluent-kafka poll loop, the baseline of bench/scale_out.py's processing stage.

``python bench/scale_poll_worker.py TOPIC GROUP SLEEP_MS OUT``: joins ``GROUP`` on ``TOPIC``,
and for each message decodes the envelope (``pipeline.envelope.decode``, as the runtime does)
and waits ``SLEEP_MS`` (``time.sleep``: the same I/O-bound handler, one event at a time);
offsets are committed by librdkafka's auto-commit. Every 50 ms it writes ``{"handled",
"last", "cpu_s"}`` to ``OUT`` (replaced atomically), which the bench reads; SIGTERM stops it.
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
    consumer = build_consumer(PipelineSettings().kafka, group)
    consumer.subscribe([topic])
    handled, last, written = 0, 0.0, 0.0
    try:
        while not stopping:
            message = consumer.poll(0.05)
            if message is not None and message.error() is None:
                decode(message.value(), message.headers(), message.key())
                time.sleep(sleep_ms / 1000)
                handled += 1
                last = time.time()
            if time.monotonic() - written >= 0.05:
                written = time.monotonic()
                report = {"handled": handled, "last": last, "cpu_s": time.process_time()}
                Path(f"{out}.tmp").write_text(json.dumps(report))
                os.replace(f"{out}.tmp", out)
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
