"""An API key for the gateway's tests: the key a client sends, and the row the gateway keeps."""

from __future__ import annotations

from datetime import UTC, datetime

from producers.gateway.keys import ApiKey, NewKey, new_key


def shop_key() -> tuple[NewKey, ApiKey]:
    """A new key named ``shop`` that may send ``place_order``: ``(made, stored)``, where
    ``made.key`` is what the client sends."""
    made = new_key()
    stored = ApiKey(
        name="shop",
        key_id=made.key_id,
        secret_sha256=made.secret_sha256,
        request_types=frozenset({"place_order"}),
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    return made, stored
