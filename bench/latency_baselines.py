"""The I/O edges of bench/e2e_latency.py that are not the pipeline: its three baselines and the
Elasticsearch watcher that both the log path and its baseline use.

- :class:`RawHop`: raw confluent-kafka, produce -> consume over one topic, timed from the
  broker's acknowledgement (the delivery report) to the consumer having the message: the
  analogue of "202 (acknowledged) -> processed" without a gateway, processor or database; a
  message consumed before its delivery report was served counts 0 (see :func:`ack_spans`);
- :class:`RequestReplyChain`: the saga baseline of bench/sagas.py (six sequential round trips
  between two threads over two topics, raw confluent-kafka), with its threads kept for a whole
  run so the levels do not pay the group joins again, each thread taking a message as soon as
  it is there (``poll``: ``consume(500, 0.1)`` would wait out its timeout whenever fewer than
  500 messages are waiting, up to 100 ms a hop);
- :class:`DirectIndex`: each line indexed straight into Elasticsearch (a bulk request every
  20 ms of what came in, into an index made from the same template as the shipper's), timed
  by the same :class:`SearchWatcher` until a search finds it;
- :class:`SearchWatcher`: polls an index every ``interval_s`` for the documents of one probe
  run (``labels.bench_run``) and notes when each ``labels.bench_seq`` was first found.

A level that loses a sample (a message never consumed, a chain never finished) stops the
benchmark (paced_load.LostSamples): no percentile of the survivors is reported.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Hashable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]
from elasticsearch import ApiError, Elasticsearch, NotFoundError
from elasticsearch.helpers import bulk
from paced_load import all_samples

from pipeline.kafka.clients import build_admin, consumer_config, producer_config
from pipeline.logs.schema import ensure_index_template, index_for
from pipeline.settings import PipelineSettings

__all__ = [
    "DirectIndex",
    "RawHop",
    "RequestReplyChain",
    "SearchWatcher",
    "ack_spans",
    "create_topics",
    "delete_topics",
    "pace",
]

#: Round trips of one CreateOrder saga without failures (as bench/sagas.py).
ROUND_TRIPS = 6


def pace(offsets: Sequence[float], send: Any) -> None:
    """Call ``send(n)`` at each offset (seconds from now) on this thread: an open-model load
    (a late call is made at once, the schedule does not slip)."""
    began = time.monotonic()
    for n, offset in enumerate(offsets):
        pause = began + offset - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        send(n)


def ack_spans(
    acked: Mapping[Hashable, float], consumed: Mapping[Hashable, float]
) -> tuple[list[tuple[float, float]], int]:
    """(acknowledged, consumed) of each message both saw, in order, and how many were consumed
    before their acknowledgement was served.

    The delivery report is served on the producer's poll thread, the message on the consumer's:
    the consumer can have a message a moment before the producer's thread has its ack, which
    made latencies negative. The gateway path this is the baseline of starts at the 202, which
    the gateway can send only once the ack has reached it: the moment the producing program
    *has* the ack. A message consumed before that moment took no time after it, so it counts
    0 (never negative), and how many did is reported beside the percentiles. (The broker's
    LogAppendTime would start the clock at the append, before the ack: not the same moment as
    the gateway path's.)"""
    spans = []
    early = 0
    for key, at in consumed.items():
        if key not in acked:
            continue
        ack = acked[key]
        if at < ack:
            early += 1
        spans.append((ack, max(ack, at)))
    return sorted(spans), early


def create_topics(settings: PipelineSettings, names: Sequence[str], partitions: int) -> None:
    admin = build_admin(settings.kafka)  # kept until the futures are done
    futures = admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    for future in futures.values():
        future.result(30)


def delete_topics(settings: PipelineSettings, names: Sequence[str]) -> None:
    admin = build_admin(settings.kafka)
    for future in admin.delete_topics(list(names)).values():
        try:
            future.result(30)
        except Exception as error:  # a leftover topic is not fatal to the results
            print(f"could not delete a bench topic: {' '.join(str(error).split())[:200]}")


def _joined(consumer: Consumer, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not consumer.assignment():
        consumer.poll(0.1)
        if time.monotonic() > deadline:
            raise SystemExit("a baseline consumer got no partitions")


class RawHop:
    """Produce -> consume with raw confluent-kafka; latencies from ack to consumed."""

    def __init__(self, settings: PipelineSettings, run: str, partitions: int = 6) -> None:
        self.settings = settings
        self.topic = f"bench.e2e-{run}.raw-hop"
        create_topics(settings, [self.topic], partitions)
        self.producer = Producer(producer_config(settings.kafka))
        self.consumer = Consumer(
            consumer_config(
                settings.kafka, f"bench-e2e-{run}-raw-hop", **{"auto.offset.reset": "latest"}
            )
        )
        self.consumer.subscribe([self.topic])
        _joined(self.consumer)
        #: Per level, how many messages were consumed before their ack was served (counted 0).
        self.consumed_before_ack: list[int] = []

    def level(self, offsets: Sequence[float]) -> list[tuple[float, float]]:
        """(acknowledged, consumed) wall-clock times of each message of the schedule."""
        run = uuid.uuid4().hex[:6].encode()
        acked: dict[bytes, float] = {}
        consumed: dict[bytes, float] = {}
        stop = threading.Event()

        def delivered(error: Any, message: Any) -> None:
            if error is None:
                acked[message.value()] = time.time()

        def poll_producer() -> None:
            while not stop.is_set():
                self.producer.poll(0.005)

        def consume() -> None:
            while not stop.is_set() and len(consumed) < len(offsets):
                message = self.consumer.poll(0.05)  # returns as soon as one is there
                if message is not None and (message.value() or b"").startswith(run):
                    consumed[message.value() or b""] = time.time()

        threads = [threading.Thread(target=poll_producer), threading.Thread(target=consume)]
        for thread in threads:
            thread.start()

        def send(n: int) -> None:
            self.producer.produce(
                self.topic,
                key=str(n).encode(),
                value=run + b"-" + str(n).encode(),
                on_delivery=delivered,
            )

        pace(offsets, send)
        self.producer.flush(30)
        threads[1].join(60)
        stop.set()
        threads[0].join(10)
        spans, early = ack_spans(acked, consumed)
        self.consumed_before_ack.append(early)
        return all_samples("raw hop: messages acknowledged and consumed", spans, len(offsets))

    def close(self) -> None:
        self.consumer.close()
        delete_topics(self.settings, [self.topic])


class RequestReplyChain:
    """Sagas of ROUND_TRIPS sequential request/reply exchanges between two threads."""

    def __init__(self, settings: PipelineSettings, run: str) -> None:
        self.settings = settings
        self.requests, self.replies = f"bench.e2e-{run}.chain-req", f"bench.e2e-{run}.chain-rep"
        create_topics(settings, [self.requests, self.replies], 6)
        self.producer = Producer(producer_config(settings.kafka, **{"linger.ms": 1}))
        self._started: dict[str, float] = {}
        self._finished: dict[str, float] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._joined = threading.Barrier(3)
        self._threads = [
            threading.Thread(target=self._responder, args=(f"bench-e2e-{run}-responder",)),
            threading.Thread(target=self._driver, args=(f"bench-e2e-{run}-driver",)),
        ]
        for thread in self._threads:
            thread.start()
        self._joined.wait(120)

    def _consumer(self, topic: str, group: str) -> Consumer:
        client = Consumer(
            consumer_config(self.settings.kafka, group, **{"auto.offset.reset": "earliest"})
        )
        client.subscribe([topic])
        _joined(client)
        self._joined.wait(120)
        return client

    def _responder(self, group: str) -> None:
        client = self._consumer(self.requests, group)
        while not self._done.is_set():
            message = client.poll(0.05)  # returns as soon as one is there
            if message is not None and message.error() is None:
                self.producer.produce(self.replies, key=message.key(), value=message.value())
            self.producer.poll(0)
        client.close()

    def _driver(self, group: str) -> None:
        client = self._consumer(self.replies, group)
        while not self._done.is_set():
            message = client.poll(0.05)  # returns as soon as one is there
            if message is not None and message.error() is None:
                step = int(message.value() or b"0") + 1
                if step < ROUND_TRIPS:
                    self.producer.produce(
                        self.requests, key=message.key(), value=str(step).encode()
                    )
                else:
                    with self._lock:
                        self._finished[(message.key() or b"").decode()] = time.time()
            self.producer.poll(0)
        client.close()

    def level(
        self, offsets: Sequence[float], timeout_s: float = 120.0
    ) -> list[tuple[float, float]]:
        """(started, finished) wall-clock times of each chain of the schedule."""
        run = uuid.uuid4().hex[:6]
        keys = [f"{run}-{n}" for n in range(len(offsets))]

        def send(n: int) -> None:
            self._started[keys[n]] = time.time()
            self.producer.produce(self.requests, key=keys[n].encode(), value=b"0")
            self.producer.poll(0)

        pace(offsets, send)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if all(key in self._finished for key in keys):
                    break
            time.sleep(0.05)
        with self._lock:
            spans = sorted(
                (self._started[k], self._finished[k]) for k in keys if k in self._finished
            )
        return all_samples(
            f"request/reply chain: chains finished in {timeout_s:g} s", spans, len(offsets)
        )

    def close(self) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join(30)
        self.producer.flush(10)
        delete_topics(self.settings, [self.requests, self.replies])


class SearchWatcher:
    """Notes when each probe line of one run is first found by a search of ``index``."""

    def __init__(self, es: Elasticsearch, index: str, run: str, count: int) -> None:
        self.es, self.index, self.run, self.count = es, index, run, count
        self.found: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> SearchWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def wait(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.found) < self.count and time.monotonic() < deadline:
            time.sleep(0.05)

    def _watch(self, interval_s: float = 0.05) -> None:
        lowest = 0  # every seq below it was found
        while not self._stop.is_set() and len(self.found) < self.count:
            try:
                hits = self.es.search(
                    index=self.index,
                    size=10_000,
                    source=["labels.bench_seq"],
                    query={
                        "bool": {
                            "filter": [
                                {"term": {"labels.bench_run": self.run}},
                                # A keyed flattened field (labels) takes a range only with
                                # both bounds.
                                {
                                    "range": {
                                        "labels.bench_seq": {"gte": f"{lowest:09d}", "lte": "9" * 9}
                                    }
                                },
                            ]
                        }
                    },
                )["hits"]["hits"]
            except NotFoundError:  # no index behind the alias yet
                hits = []
            except ApiError as error:  # 503 while a new index's shard starts
                if error.status_code != 503:
                    raise
                hits = []
            now = time.time()
            for hit in hits:
                self.found.setdefault(int(hit["_source"]["labels"]["bench_seq"]), now)
            while lowest in self.found:
                lowest += 1
            self._stop.wait(interval_s)


class DirectIndex:
    """Lines bulk-indexed straight into Elasticsearch, a request every 20 ms."""

    def __init__(self, es: Elasticsearch, alias: str) -> None:
        self.es, self.alias = es, alias
        ensure_index_template(es, alias=alias)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._index, daemon=True)
        self._thread.start()

    def send(self, run: str, seq: int) -> float:
        """Queue one line for indexing; returns its wall-clock time."""
        now = time.time()
        self._queue.put(
            {
                "_index": index_for(datetime.now(UTC), alias=self.alias),
                "message": "e2e latency probe",
                "labels": {"bench_run": run, "bench_seq": f"{seq:09d}"},
            }
        )
        return now

    def _index(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            time.sleep(0.02)
            batch = [first]
            while not self._queue.empty():
                item = self._queue.get()
                if item is None:
                    bulk(self.es, batch)
                    return
                batch.append(item)
            bulk(self.es, batch)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(30)
        self.es.options(ignore_status=404).indices.delete(index=f"{self.alias}-*")
        self.es.options(ignore_status=404).indices.delete_index_template(name=self.alias)
