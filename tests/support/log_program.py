"""A small program that logs like a processor would: inside log_context, through configure_logging.

Usage: python tests/support/log_program.py SERVICE CORRELATION_ID COUNT [--sleep S]
Settings (topic, Kafka) come from PIPELINE_* like any program of the project.
"""

import argparse
import logging
import time

from pipeline.ids import new_event_id
from pipeline.logs import configure_logging, log_context
from pipeline.settings import PipelineSettings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("service")
    parser.add_argument("correlation_id")
    parser.add_argument("count", type=int)
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    configure_logging(PipelineSettings(), args.service)
    log = logging.getLogger(f"{args.service}.handler")
    for n in range(args.count):
        event_id = new_event_id()
        with log_context(event_id=event_id, correlation_id=args.correlation_id, topic="orders"):
            log.info("handled event %d", n, extra={"n": n})
        if args.sleep:
            time.sleep(args.sleep)
    # configure_logging closes (flushes) the Kafka handler at exit


if __name__ == "__main__":
    main()
