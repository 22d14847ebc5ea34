"""API keys: their format, how they are checked, and the set of keys a gateway knows.

A key is ``pgk_<key id>_<secret>``: the key id (16 hex characters) is public and finds the key's
record; the secret (``secrets.token_urlsafe(32)``, 256 random bits) is known only to its holder.
The database keeps the SHA-256 digest of the secret, never the key. A fast hash is enough here:
a slow KDF (scrypt, bcrypt) protects guessable passwords, but nobody can search 2**256 secrets,
so it would only cost CPU on every request. Digests are compared in constant time
(:func:`hmac.compare_digest`).

A key is *rotated* (``pipeline gateway keys rotate``) by a new secret under the same name and
key id: the same client (rate limit, Idempotency-Key scope, request types). The digest of the
secret before is kept beside the new one until a moment the rotation chose (its grace period):
until then either secret is accepted, both compared in constant time; after it, only the new one,
whether or not the gateway has read the keys again since.

Pure: no I/O (:mod:`producers.gateway.key_table` reads and writes the records).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

__all__ = [
    "KEY_PREFIX",
    "ApiKey",
    "KeyRing",
    "NewKey",
    "bearer_token",
    "key_id_of",
    "name_problem",
    "new_key",
    "secret_digest",
]

#: What every API key starts with (and no JWT can: a JWT starts with its base64url header).
KEY_PREFIX = "pgk_"
_KEY_ID_HEX = 16
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def secret_digest(secret: str) -> str:
    """The SHA-256 digest (hex) of a key's secret part, as the database keeps it."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a key, or ``None`` when it can."""
    if _NAME.fullmatch(name) is None:
        return (
            "a key name is 1 to 128 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit"
        )
    return None


@dataclass(frozen=True)
class NewKey:
    """A key just made: the key to hand to its holder once, and what the database keeps."""

    key_id: str
    secret_sha256: str = field(repr=False)
    key: str = field(repr=False)


def new_key(key_id: str | None = None) -> NewKey:
    """A new random key (:func:`secrets.token_urlsafe`, 256 bits) and its digest; ``key_id``:
    a new secret for that key (a rotation), else a new key id too."""
    if key_id is None:
        key_id = secrets.token_hex(_KEY_ID_HEX // 2)
    secret = secrets.token_urlsafe(32)
    return NewKey(key_id, secret_digest(secret), f"{KEY_PREFIX}{key_id}_{secret}")


def _split(key: str) -> tuple[str, str] | None:
    """``(key id, secret)`` of a key in our format, else ``None``."""
    if not key.startswith(KEY_PREFIX):
        return None
    rest = key[len(KEY_PREFIX) :]
    key_id, separator, secret = rest[:_KEY_ID_HEX], rest[_KEY_ID_HEX : _KEY_ID_HEX + 1], rest[17:]
    if separator != "_" or not secret or not all(c in "0123456789abcdef" for c in key_id):
        return None
    return key_id, secret


def key_id_of(token: str) -> str | None:
    """The key id of ``token`` if it is an API key in our format (valid or not), else ``None``."""
    parts = _split(token)
    return None if parts is None else parts[0]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else ``None``."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


@dataclass(frozen=True)
class ApiKey:
    """One key's record: never the key, only its id and the digest of its secret."""

    name: str
    key_id: str
    secret_sha256: str = field(repr=False)
    request_types: frozenset[str]
    created_at: datetime
    revoked_at: datetime | None = None
    #: The digest of the secret before the last rotation, accepted until ``previous_until``.
    previous_secret_sha256: str | None = field(default=None, repr=False)
    previous_until: datetime | None = None
    #: When the secret was last replaced (``None``: never rotated).
    rotated_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def previous_valid(self, now: datetime) -> bool:
        """Whether the secret before the last rotation is still accepted at ``now``."""
        return (
            self.previous_secret_sha256 is not None
            and self.previous_until is not None
            and now < self.previous_until
        )

    @property
    def label(self) -> str:
        return f"the API key {self.name!r}"

    def may_send(self, request_type: str) -> bool:
        return request_type in self.request_types


class KeyRing:
    """The keys a gateway knows, by key id. With no key at all (not even a revoked one) the
    gateway is *open*: every request is let in, as before keys existed."""

    def __init__(self, keys: Iterable[ApiKey] = ()) -> None:
        self._by_id = {key.key_id: key for key in keys}

    def __len__(self) -> int:
        return len(self._by_id)

    def __repr__(self) -> str:
        return f"KeyRing({len(self._by_id)} keys)"

    @property
    def revoked(self) -> int:
        return sum(key.revoked for key in self._by_id.values())

    @property
    def open(self) -> bool:
        return not self._by_id

    def authenticate(self, key: str, now: datetime | None = None) -> ApiKey | None:
        """The record of a valid, unrevoked ``key``: its current secret, or the one before a
        rotation until its grace period ends (``now``: the wall clock, by default), else
        ``None``."""
        parts = _split(key)
        if parts is None:
            return None
        key_id, secret = parts
        record = self._by_id.get(key_id)
        if record is None or record.revoked:
            return None
        digest = secret_digest(secret)
        current = hmac.compare_digest(digest, record.secret_sha256)
        # Both compared, whichever matches: the time taken does not say which one it was.
        previous = record.previous_secret_sha256 is not None and hmac.compare_digest(
            digest, record.previous_secret_sha256
        )
        if current or (previous and record.previous_valid(now or datetime.now(UTC))):
            return record
        return None
