"""The transactional mode of :class:`~pipeline.kafka.producer.EventProducer`, for
read-process-write processors and the dead-letter redrive: begin, send, commit (retrying what
librdkafka says may be retried), abort (forgetting the transaction's events), and an interrupt
that cuts into a commit told apart from the commit's own outcome.

A mixin rather than functions: the transaction's abort rolls back the producer's own counts of
queued and failed events, which the producer keeps under its lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, Self

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from pipeline.errors import PipelineError
from pipeline.kafka.delivery import Delivery, TransactionAborted

if TYPE_CHECKING:
    from pipeline.kafka.producer import ProducerClient

__all__ = ["ProducerTransactions"]


class ProducerTransactions:
    """Transactions over the producer's client (``transactional.id`` in its config)."""

    # The producer's (EventProducer.__init__): its client, and the counts an abort rolls back.
    _client: ProducerClient
    _lock: threading.Lock
    _queued: int
    _failed: int
    _unobserved_failures: list[Delivery]

    def init_transactions(self, timeout_s: float = 30.0) -> None:
        """Once, before the first transaction (needs ``transactional.id`` in the config)."""
        self._transactional_call(self._client.init_transactions, timeout_s)

    @contextmanager
    def transaction(
        self,
        timeout_s: float = 30.0,
        *,
        on_interrupted_commit: Callable[[bool | None], None] | None = None,
    ) -> Iterator[Self]:
        """Everything sent in the block commits together, or aborts if the block raises.

        1. begin; 2. the block sends (and may call :meth:`send_offsets`); 3. commit, which
        flushes first. An exception in the block aborts and is re-raised. The events of an
        aborted transaction are forgotten: not counted, and their failures (purged ones
        included) not raised by a later :meth:`flush`.

        With ``on_interrupted_commit``, an interrupt (Ctrl-C, SIGTERM) that cuts into the
        commit is raised once the commit is finished, after ``on_interrupted_commit`` was told
        whether the transaction was committed (``None``: that could not be learnt); see
        :meth:`_finish_interrupted_commit`.
        """
        self._transactional_call(self._client.begin_transaction)
        began = self._tally()
        try:
            yield self
        except BaseException:
            self._abort(timeout_s, began)
            raise
        self._commit(timeout_s, began, on_interrupted_commit)

    def _tally(self) -> tuple[int, int, int]:
        """Events queued, failed, and failures unobserved so far (what an abort goes back to)."""
        with self._lock:
            return self._queued, self._failed, len(self._unobserved_failures)

    def _abort(self, timeout_s: float, began: tuple[int, int, int]) -> None:
        """Abort the transaction begun at ``began`` and forget its events.

        Flushed first: an abort right after the transaction's first sends raced librdkafka
        adding their partitions to it, and the broker refused the end of the transaction with
        INVALID_TXN_STATE, a fatal error that left the producer unusable (3 of 8 aborts of 20
        events just sent, here; librdkafka #4849). Once its produce requests are answered the
        abort marks them aborted: read_committed consumers never see them.
        """
        self._client.flush(timeout_s)
        self._transactional_call(self._client.abort_transaction, timeout_s)
        queued, failed, unobserved = began
        with self._lock:
            self._queued, self._failed = queued, failed
            del self._unobserved_failures[unobserved:]

    def _commit(
        self,
        timeout_s: float,
        began: tuple[int, int, int],
        on_interrupted: Callable[[bool | None], None] | None = None,
    ) -> None:
        """Commit; retry what librdkafka says is retriable, abort what must be aborted.

        After an abort (or a fatal error) the transaction's events are not visible to
        read_committed consumers; the caller reprocesses from its last committed offsets.
        With ``on_interrupted``, anything else out of the commit (an interrupt) is raised once
        the commit is finished and ``on_interrupted`` told whether it committed.
        """
        while True:
            try:
                self._client.commit_transaction(timeout_s)
                return
            except KafkaException as exception:
                error = exception.args[0]
                if error.retriable():
                    continue
                if error.txn_requires_abort():
                    self._abort(timeout_s, began)
                    raise TransactionAborted(
                        f"the transaction was aborted: {error.str()}"
                    ) from None
                raise PipelineError(
                    f"committing the transaction failed{' (fatal)' if error.fatal() else ''}: "
                    f"{error.str()}"
                ) from None
            except BaseException:
                if on_interrupted is None:
                    raise
                on_interrupted(self._finish_interrupted_commit(timeout_s, began))
                raise

    def _finish_interrupted_commit(
        self, timeout_s: float, began: tuple[int, int, int]
    ) -> bool | None:
        """Whether the transaction whose commit an interrupt cut into was committed, once that
        commit is finished; ``None`` when it cannot be learnt (a second interrupt, Kafka not
        answering within ``timeout_s``, a fatal error).

        A Ctrl-C handler raises between bytecodes, so inside a delivery callback that the
        commit's flush runs: measured with confluent-kafka 2.16.2 (SIGINT during the commit of
        1,000 messages, 40 tries), 15 times the flush stopped there and the commit with it, half
        done and resumable, and the interrupt was lost: ``SystemError: <method
        'commit_transaction' ...> returned NULL without setting an exception``; 4 times the
        commit had ended and ``KeyboardInterrupt`` came out. Calling ``commit_transaction``
        again resumes the first (every message was then visible) and refuses the second with
        ``_STATE`` "not valid in state Ready", a state a begun transaction reaches only by
        being committed (nothing aborted it); the others are read as :meth:`_commit` reads them.
        """
        try:
            self._client.commit_transaction(timeout_s)
        except KafkaException as exception:
            error = exception.args[0]
            if error.code() == KafkaError._STATE and not error.fatal():
                return True if "state Ready" in error.str() else None
            if error.txn_requires_abort():
                with suppress(Exception, KeyboardInterrupt):  # not committed, aborted or not
                    self._abort(timeout_s, began)
                return False
            return None
        except BaseException:  # a second interrupt: the commit may be half done
            return None
        return True

    def send_offsets(
        self, positions: list[TopicPartition], group_metadata: Any, timeout_s: float = 30.0
    ) -> None:
        """Commit a consumer's positions as part of the current transaction."""
        self._transactional_call(
            self._client.send_offsets_to_transaction, positions, group_metadata, timeout_s
        )

    @staticmethod
    def _transactional_call(call: Callable[..., None], *args: Any) -> None:
        try:
            call(*args)
        except KafkaException as error:
            raise PipelineError(
                f"transaction step {call.__name__} failed: {error.args[0]}"
            ) from error
