"""The shared store's decision for a key another request claimed (step 2), without a database."""

from __future__ import annotations

import pytest

from producers.gateway.idempotency import IdempotencyKeyReused, Replay, StoredAnswer
from producers.gateway.shared_idempotency import Row, decide


def test_a_row_gone_means_claim_again():
    assert decide(None, "k", "fp") == "gone"


def test_a_row_without_an_answer_is_pending():
    assert decide(Row("fp", "token", None, None), "k", "fp") == "pending"


def test_a_row_with_an_answer_is_replayed_as_stored():
    row = Row("fp", "token", 202, b'{"event_id":"e1"}')

    assert decide(row, "k", "fp") == Replay(StoredAnswer(202, b'{"event_id":"e1"}'))


@pytest.mark.parametrize("status", [None, 202])
def test_another_body_is_a_reused_key_whether_pending_or_answered(status):
    with pytest.raises(IdempotencyKeyReused):
        decide(Row("fp-first", "token", status, b"{}"), "k", "fp-second")
