"""The outbox relay: committed outbox rows to Kafka, marked published only once acknowledged.

Per aggregate, rows reach Kafka in position order, whichever relay sends them; a row is marked
published only after the broker acknowledged it, so publishing is at least once, never lossy.

- :mod:`~producers.outbox_relay.relay`: the loop (claim -> send -> wait -> mark), its totals;
- :mod:`~producers.outbox_relay.claims`: the claim strategy, one per database:
  :mod:`~producers.outbox_relay.postgres_claims` (advisory-lock buckets, several relays) and
  :mod:`~producers.outbox_relay.sqlite_claims` (a lease, one relay at a time);
- :mod:`~producers.outbox_relay.sending`: one batch to Kafka and the positions that may be marked;
- :mod:`~producers.outbox_relay.topic_checks`: the rows refused before a batch is sent (a topic
  that does not exist, an event over its topic's own ``max.message.bytes``);
- :mod:`~producers.outbox_relay.holds`: what the relay remembers of the rows it could not
  publish (refused by Kafka as too large, failed, held back);
- :mod:`~producers.outbox_relay.notify`: LISTEN/NOTIFY wake-ups on PostgreSQL;
- :mod:`~producers.outbox_relay.housekeeping` and :mod:`~producers.outbox_relay.metrics`;
- :mod:`~producers.outbox_relay.runner`: from settings to a running relay (this thread, a
  background thread, a child process), with metrics served and signals handled.
"""

from producers.outbox_relay.claims import Claim, ClaimStrategy, LeaseState
from producers.outbox_relay.metrics import RelayMetrics
from producers.outbox_relay.postgres_claims import BucketClaims
from producers.outbox_relay.relay import BatchResult, OutboxRelay, RelayTotals, claim_strategy
from producers.outbox_relay.runner import relay_subprocess, run_relay, running_relay
from producers.outbox_relay.sending import SendOutcome, send_batch
from producers.outbox_relay.sqlite_claims import LeaseClaims

__all__ = [
    "BatchResult",
    "BucketClaims",
    "Claim",
    "ClaimStrategy",
    "LeaseClaims",
    "LeaseState",
    "OutboxRelay",
    "RelayMetrics",
    "RelayTotals",
    "SendOutcome",
    "claim_strategy",
    "relay_subprocess",
    "run_relay",
    "running_relay",
    "send_batch",
]
