"""JWT bearer tokens from an identity provider, checked against the gateway's JWT settings.

A token (``Authorization: Bearer <JWT>``) is accepted when, in this order:

1. its header's ``alg`` is one of ``algorithms`` (set explicitly; ``none`` can never be one),
   and with a JWKS its ``kid`` names one of the set's keys (a set of one key needs no ``kid``);
   the key's own algorithm must be the token's (no RS256/HS256 confusion);
2. its signature verifies with that key;
3. ``exp`` is required and not past, ``nbf`` and ``iat`` (when present) not in the future, each
   with ``leeway_s`` of clock skew; ``iss`` is the issuer; ``aud`` includes the audience;
   ``sub`` is required: it names the client;
4. then the request types it may send are the entries of ``types_claim`` (a space-separated
   string such as OAuth's ``scope``, or a list) that start with ``scope_prefix``:
   ``"openid requests:place_order"`` may send ``place_order``. A valid token that may not send
   the request's type gets 403, like an API key.

The client of a token (its rate limit and Idempotency-Key scope) is ``jwt:<sub>``: no API key
name can be that (a key name has no ':'). A rejected token gets 401 with a message of our own
that says what was wrong, never PyJWT's (which may quote the token's bytes), never the token
or the key. PyJWT does the cryptography and the claim checks; this module only chooses the key
and the options, and maps its verdicts.

Pure apart from :func:`load_token_verifier`, which reads the key files once, at start.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from pipeline.errors import PipelineError
from pipeline.settings import JwtSettings

__all__ = ["TokenClient", "TokenRejected", "TokenVerifier", "load_token_verifier"]

CLIENT_PREFIX = "jwt:"
#: The longest ``sub`` a token may have: its client name (with :data:`CLIENT_PREFIX`) is at
#: most the 255 characters of a client in the Idempotency-Key store.
MAX_SUBJECT = 255 - len(CLIENT_PREFIX)
_REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]
_PRIVATE_KEYS = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


class TokenRejected(Exception):
    """The token is not accepted; the message says why, without quoting the token."""


@dataclass(frozen=True)
class TokenClient:
    """Who a valid token names, and what it may send."""

    subject: str
    request_types: frozenset[str]

    @property
    def name(self) -> str:
        return f"{CLIENT_PREFIX}{self.subject}"

    @property
    def label(self) -> str:
        return f"the token of {self.subject!r}"

    def may_send(self, request_type: str) -> bool:
        return request_type in self.request_types


_Key = Any  # a secret (str), a cryptography public key, or a jwt.PyJWKSet


class TokenVerifier:
    """Steps 1 to 4 for one configuration and its key (a secret, a public key or a JWKS)."""

    def __init__(self, settings: JwtSettings, key: _Key) -> None:
        self.settings = settings
        self._key = key
        self._algorithms: list[str] = list(settings.algorithms)
        self._decoder = jwt.PyJWT({"require": _REQUIRED_CLAIMS, "enforce_minimum_key_length": True})

    def __repr__(self) -> str:
        return f"TokenVerifier(issuer={self.settings.issuer!r}, algorithms={self._algorithms})"

    def verify(self, token: str) -> TokenClient:
        """The client of a valid ``token``, else :class:`TokenRejected`."""
        settings = self.settings
        try:
            claims = self._decoder.decode(
                token,
                self._key_for(token),
                algorithms=self._algorithms,
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway_s,
            )
        except jwt.PyJWTError as error:
            raise TokenRejected(_reason(error, self._algorithms)) from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.strip():
            # Spaces only name no one: logs and limits would show a blank client.
            raise TokenRejected("the token's 'sub' claim must name its holder")
        if len(subject) > MAX_SUBJECT or not subject.isprintable():
            # The holder names the client in the Idempotency-Key store (255 characters with
            # its "jwt:") and in log lines: a longer one failed every claim of its batch, other
            # clients' included (503), and a NUL or a line break forged log lines.
            raise TokenRejected(
                f"the token's 'sub' claim must be at most {MAX_SUBJECT} printable characters"
            )
        return TokenClient(subject, self._request_types(claims.get(settings.types_claim)))

    def _key_for(self, token: str) -> _Key:
        if not isinstance(self._key, jwt.PyJWKSet):
            return self._key
        kid = jwt.get_unverified_header(token).get("kid")  # DecodeError when malformed
        if kid is None:
            if len(self._key.keys) == 1:
                return self._key.keys[0]
            raise TokenRejected("the token has no 'kid' to pick its key from the JWKS")
        try:
            return self._key[str(kid)]
        except KeyError:
            raise TokenRejected("the token's 'kid' is not one of the JWKS's keys") from None

    def _request_types(self, claim: object) -> frozenset[str]:
        entries: Iterable[object]
        if isinstance(claim, str):
            entries = claim.split()
        elif isinstance(claim, list):
            entries = claim
        else:
            return frozenset()
        prefix = self.settings.scope_prefix
        return frozenset(
            entry[len(prefix) :]
            for entry in entries
            if isinstance(entry, str) and entry.startswith(prefix) and len(entry) > len(prefix)
        )


def _reason(error: jwt.PyJWTError, algorithms: list[str]) -> str:
    """Our message for PyJWT's verdict: what is wrong, in words that quote nothing of it."""
    if isinstance(error, jwt.ExpiredSignatureError):
        return "the token has expired"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "the token is not valid yet (its nbf or iat is in the future)"
    if isinstance(error, jwt.InvalidAudienceError):
        return "the token is not meant for this gateway (aud)"
    if isinstance(error, jwt.InvalidIssuerError):
        return "the token's issuer is not trusted (iss)"
    if isinstance(error, jwt.exceptions.InvalidSubjectError):
        return "the token's 'sub' claim must name its holder"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"the token lacks the {error.claim!r} claim"
    if isinstance(error, jwt.InvalidSignatureError):
        return "the token's signature is not valid"
    if isinstance(error, jwt.InvalidAlgorithmError | jwt.InvalidKeyError):
        return f"the token's algorithm is not accepted (accepted: {', '.join(algorithms)})"
    return "the token is not a well-formed JWT"


def load_token_verifier(settings: JwtSettings) -> TokenVerifier:
    """The verifier of ``settings``, its key read from its file now; :class:`PipelineError`
    (one line, naming the file; one that cannot be read, with its setting) when it cannot be
    used."""
    if settings.secret is not None:
        return TokenVerifier(settings, settings.secret.get_secret_value())
    if settings.public_key_file is not None:
        path = settings.public_key_file
        try:
            return TokenVerifier(settings, load_pem_public_key(_read(path, _PUBLIC_KEY_FILE)))
        except (ValueError, TypeError) as error:
            raise PipelineError(f"{path} is not a PEM public key: {error}") from None
    assert settings.jwks_file is not None  # JwtSettings has exactly one key source
    path = settings.jwks_file
    try:
        document = json.loads(_read(path, _JWKS_FILE))
        keys = jwt.PyJWKSet.from_dict(document)
    # TypeError: a member of the wrong JSON type PyJWT does not check (an "alg" list);
    # NotImplementedError: an "alg" of "none", whose key PyJWT cannot make.
    except (jwt.exceptions.PyJWKSetError, TypeError, NotImplementedError) as error:
        unusable = _first_unusable_key(document)  # PyJWT's set keeps no word of why
        if unusable is not None:
            raise PipelineError(f"{path} has no key the gateway can use: {unusable}") from None
        raise PipelineError(
            f'{path} is not a JWKS file ({{"keys": [...]}}): {_without_hint(error)}'
        ) from None
    except (ValueError, AttributeError, jwt.PyJWTError) as error:
        raise PipelineError(f'{path} is not a JWKS file ({{"keys": [...]}}): {error}') from None
    if any(isinstance(key.key, _PRIVATE_KEYS) for key in keys.keys):
        raise PipelineError(f"{path} holds private keys: give the gateway the public keys only")
    if any(isinstance(key.key, bytes) for key in keys.keys):  # kty "oct": an HMAC secret
        raise PipelineError(
            f"{path} holds a shared secret (a key of kty 'oct'): a JWKS file gives the gateway "
            "public keys only; for HS256 tokens set PIPELINE_GATEWAY__JWT__SECRET instead"
        )
    return TokenVerifier(settings, keys)


def _first_unusable_key(document: object) -> str | None:
    """Which key of a JWKS document PyJWT cannot use, the first, and why ("key 0 (kid 'a') is
    not a usable JWK: ..."), in PyJWT's own words for that key (:class:`jwt.PyJWK`) without
    the key's data, which they may quote (a secret's ``k``, a private key's ``d``); ``None``
    when no key says."""
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        return None
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            return f"key {index} is not a JSON object"
        kid = entry.get("kid")
        which = f"key {index}" + ("" if kid is None else f" (kid {str(kid)[:80]!r})")
        try:
            jwt.PyJWK(entry)
        except jwt.PyJWTError as error:
            return f"{which} is not a usable JWK: {_without_key_data(error, entry)}"
        except TypeError:  # PyJWT's own message may name a member's value: not quoted
            return f"{which} is not a usable JWK: a member is of the wrong JSON type"
        except NotImplementedError:  # "alg": "none"
            return (
                f"{which} is not a usable JWK: its alg {str(entry.get('alg'))[:40]!r} signs nothing"
            )
    return None


def _without_key_data(error: jwt.PyJWTError, entry: dict[str, Any]) -> str:
    """PyJWK's message for ``entry`` cut before the JWK it appends to some (``kty is not
    found: {...}``): that may hold a secret."""
    if type(error) is jwt.exceptions.PyJWKError:  # "Unable to find an algorithm for key: {...}"
        return f"its alg {str(entry.get('alg'))[:40]!r} is no algorithm PyJWT knows"
    message = _without_hint(error).split(": {", 1)[0]
    return message if message else type(error).__name__


def _without_hint(error: Exception) -> str:
    """PyJWT's message without its guess that cryptography is missing, unless it is."""
    from jwt.algorithms import has_crypto

    message = str(error)
    if has_crypto:
        message = message.replace(" Perhaps 'cryptography' is not installed?", "")
    return message


#: The settings that name the key files (``JwtSettings.public_key_file``, ``.jwks_file``).
_PUBLIC_KEY_FILE = "PIPELINE_GATEWAY__JWT__PUBLIC_KEY_FILE"
_JWKS_FILE = "PIPELINE_GATEWAY__JWT__JWKS_FILE"


def _read(path: Path, setting: str) -> bytes:
    """The bytes of the file at ``path``, named by ``setting``."""
    try:
        return path.read_bytes()
    except OSError as error:
        raise PipelineError(f"cannot read {setting} ({path}): {error.strerror or error}") from None
