"""Secrets and card numbers are masked before a log record leaves the process.

Pure functions over text. What is masked (the value is replaced by ``[REDACTED]``):

1. ``Authorization``/``Proxy-Authorization`` header values (``Bearer ...``, ``Basic ...``), also
   as a dict prints them, and a ``Bearer`` credential anywhere;
2. the value after a secret-looking name, in ``name=value``, ``name: value``, JSON
   ``"name": "value"`` and command-line ``--name value`` forms: password, passwd, pwd, secret,
   token, api key, access key, private key, client secret, credentials, session id... (any name
   that *contains* one of them, so ``db_password`` and ``X-Api-Key`` count too), and auth as a
   word of the name (``auth``, ``basic_auth``; not ``author``);
3. the password in a URL's user info (``postgres://user:secret@host``);
4. card-like numbers: 13 to 19 digits, optionally grouped by spaces or dashes, standing on their
   own (not inside a word, an id or a UUID), that pass the Luhn check (order numbers and
   timestamps mostly do not, so they stay readable).

Hand-written regular expressions: the logging libraries we know (ecs-logging, structlog) leave
redaction to the application, and scrubbers such as Sentry's work on their own event shape.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeAlias

# The settings' list of secret words, which masks a URL's secret query parameters alike.
from pipeline.settings.base import SECRET_WORDS

__all__ = [
    "MASK",
    "LabelValue",
    "is_secret_name",
    "luhn_valid",
    "redact",
    "redact_labels",
    "unique_key",
]

MASK = "[REDACTED]"

#: A value under a log record's ``labels``: a string, or objects and lists of them, as
#: :func:`pipeline.logs.record.labels_of` makes them.
LabelValue: TypeAlias = "str | list[LabelValue] | dict[str, LabelValue]"

_SECRET_NAME = re.compile(rf"(?:{SECRET_WORDS})", re.IGNORECASE)

# "Authorization: Bearer abc", "authorization=Basic abc", and as a dict or JSON prints it,
# "'Authorization': 'Bearer abc'" (the whole credential, scheme kept). A credential has none of
# the quotes and brackets around it, nor a closing parenthesis after it.
_AUTH_HEADER = re.compile(
    r"(?P<name>(?:proxy-)?authorization)(?P<sep>[\"']?\s*[:=]\s*[\"']?)"
    r"(?P<scheme>(?:bearer|basic|digest|token|apikey|negotiate)\s+)?"
    r"(?P<value>[^\s\"',;)\]}]+)",
    re.IGNORECASE,
)
# A bearer credential anywhere else ("sent Bearer abc"), the scheme kept.
_BEARER = re.compile(r"(?P<scheme>\bbearer\s+)(?P<value>[\w\-.~+/]+=*)", re.IGNORECASE)
# name=value / name: value / "name": "value" for secret-looking names (db.password,
# jwt.secret.key); what only looks like one is told apart by _name_value.
# An unquoted value ends before a colon that ends the text or a clause ("password=abc: the
# server said no" keeps its colon); a colon inside it (abc:def) is part of it. Quotes that
# close it are kept too: in a traceback's source line, raise E("failed with password=abc") is
# raise E("failed with password=[REDACTED]") (a quote inside it, ab"cd, is masked with it).
# A quoted value ends at its closing quote, not at an escaped one (\"); an unquoted one holds
# whole bracketed parts, spaces and all (ab)cd, [tok], auth=("bob", "hunter2") (requests'
# tuple, in a traceback's source line), so a bracket in a secret does not end it.
_NAME_VALUE = re.compile(
    # (?<!...): a name starts where its run of name characters does, as the leftmost match
    # would anyway; tried from inside a run, it failed only after scanning the run's rest.
    rf"(?P<name>(?<![\w.-])[\w.-]*(?:{SECRET_WORDS})[\w.-]*)"
    r"(?P<sep>\"?'?\s*[:=]\s*)"
    r"(?P<value>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'"
    r"|(?:\([^()]{0,200}\)|\[[^\[\]]{0,200}\]|[^\s,;&)}\]])+?(?=[\"']*:?(?:[\s,;&)}\]]|$)))",
    re.IGNORECASE,
)
# What a name=value of _NAME_VALUE must hold: a secret word, the rest of its name, then the
# separator. Searched first, as it starts at the secret word: _NAME_VALUE, whose name may begin
# anywhere before it, tries every run of word characters from each of its positions, which
# costs a text with long ones (a base64 blob, whose letters spell "api" or "pwd" somewhere)
# seconds: 1.6 s for a 400 kB log line, in the logging call.
_NAME_VALUE_HINT = re.compile(rf"(?:{SECRET_WORDS})[\w.-]*\"?'?\s*[:=]", re.IGNORECASE)
# A command line's option and its value after a space (``--password hunter2``, ``--api-key
# "a b"``): a value that starts with "-" is the next option, not a secret. Quotes, brackets
# and commas that close it are kept (``run("app --password abc")``).
_OPTION_VALUE = re.compile(
    rf"(?P<name>(?<![\w-])--?[\w.-]*(?:{SECRET_WORDS})[\w.-]*)"
    r"(?P<sep>\s+)"
    r"(?P<value>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|(?!-)\S+?(?=[\"')\]},;]*:?(?:\s|$)))",
    re.IGNORECASE,
)
# With no user too (``redis://:secret@host``). Any case, and an underscore: Kafka's bootstrap
# servers may be given as ``SASL_SSL://user:password@host:port``, which no URL scheme spells.
_URL_PASSWORD = re.compile(
    r"(?P<head>[a-z][a-z0-9+._-]*://[^\s:/@]*:)(?P<value>[^\s@/]+)(?=@)", re.IGNORECASE
)
# 13-19 digits, in groups separated by single spaces or dashes; not part of a longer number or
# of a word: not next to a letter, digit, underscore or dash. (A UUID's digits between two hex
# letters, "...-76f9-8239-02327634674d...", passed the Luhn check now and then and were masked.)
_CARD = re.compile(r"(?<![\w.-])\d(?:[ -]?\d){12,18}(?![\w-])")


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn check (as every payment card number does)."""
    if not digits.isdigit():
        return False
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def is_secret_name(name: str) -> bool:
    """Whether a field name looks like it holds a secret (``password``, ``api_key``,
    ``authorization``...)."""
    return _SECRET_NAME.search(name) is not None or "authorization" in name.lower()


def _mask_quoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[0] + MASK + value[0]
    return MASK


def _url_password(match: re.Match[str]) -> str:
    # "***" is SQLAlchemy's own mask (a database URL shown without its password): kept, so
    # the same URL reads the same in the "database:" line and in an error.
    if match.group("value") == "***":
        return match.group(0)
    return match.group("head") + MASK


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    return MASK if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group(0)


def _bearer(match: re.Match[str]) -> str:
    if match.group("value").startswith("[REDACTED"):  # masked already (the header pattern)
        return match.group(0)
    return match.group("scheme") + MASK


# A file's name and line number, as an error quotes a place in a file (my-passwd.jsonl:1:):
# an extension that is no secret word, then ":<digits>:".
_FILE_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,8}")


def _name_value(match: re.Match[str]) -> str:
    value = match.group("value")
    if MASK in value:  # already masked (an Authorization header, a nested name)
        return match.group(0)
    if _names_a_file(match):
        return match.group(0)
    return match.group("name") + match.group("sep") + _mask_quoted(value)


def _option_value(match: re.Match[str]) -> str:
    if MASK in match.group("value") or match.string.startswith(" " + MASK, match.end()):
        return match.group(0)  # masked already, or a scheme before it (--auth Bearer [REDACTED])
    return match.group("name") + match.group("sep") + _mask_quoted(match.group("value"))


def _names_a_file(match: re.Match[str]) -> bool:
    """Whether a name=value match is a place in a file that an error quotes, not a secret:
    ``token_list.jsonl:3:`` (a file and a line), or ``/etc/passwd: ...`` (the end of a path,
    then ": " and the error). A path's name followed by ``=`` (``/api/token=abc``) is a
    secret's, and so is any name whose last part is a secret word (``db.password:1234``)."""
    name, sep = match.group("name"), match.group("sep")
    if sep.strip() != ":":
        return False
    extension = name[name.rfind(".") :] if "." in name else ""
    if (
        _FILE_EXTENSION.fullmatch(extension)
        and _SECRET_NAME.search(extension) is None
        and match.group("value").isdigit()
        and match.string.startswith(":", match.end())  # the value stops before that colon
    ):
        return True
    start = match.start("name")
    return sep == ": " and start > 0 and match.string[start - 1] == "/"


# What each pattern needs in the (lowercased) text before it can match. The patterns are run
# only where it is there: _NAME_VALUE, with a name of any length around a secret word, costs
# the regular expression engine about 1.5 us per character of text (25 us for a 36-character
# log message) whether it matches or not, and nearly every log line has no secret at all.
# Text that is not ASCII always gets every pattern: IGNORECASE matches some non-ASCII letters
# (the Kelvin sign for "k", the long s for "s") that str.lower() leaves as they are.
_SECRET_STEMS = (
    "passw", "passphrase", "pwd", "secret", "token", "api", "access", "private",
    "credential", "session", "cookie", "auth",
)  # fmt: skip


def _may_name_a_secret(lowered: str) -> bool:
    return any(stem in lowered for stem in _SECRET_STEMS)


def redact(text: str) -> str:
    """``text`` with secrets and card numbers replaced by :data:`MASK`."""
    if not text:
        return text
    lowered = text.lower() if text.isascii() else None
    if lowered is None or "authorization" in lowered:
        text = _AUTH_HEADER.sub(
            lambda m: m.group("name") + m.group("sep") + (m.group("scheme") or "") + MASK, text
        )
    if lowered is None or "bearer" in lowered:
        text = _BEARER.sub(_bearer, text)
    if lowered is None or _may_name_a_secret(lowered):
        if _NAME_VALUE_HINT.search(text) is not None:
            text = _NAME_VALUE.sub(_name_value, text)
        if "-" in text:
            text = _OPTION_VALUE.sub(_option_value, text)
    if "://" in text:
        text = _URL_PASSWORD.sub(_url_password, text)
    return _CARD.sub(_card, text)


def redact_labels(labels: Mapping[str, LabelValue]) -> dict[str, LabelValue]:
    """Labels with the values of secret-looking names masked whole (an object or a list too)
    and the rest :func:`redact`-ed, at every depth. A nested name is judged with its parents'
    too, as the path Elasticsearch reads (``{"api": {"key": ...}}`` is ``labels.api.key``, as
    secret as ``api_key``). The names are :func:`redact`-ed as well: an object keyed by card
    numbers (or by ``password=...``) would otherwise carry them."""
    return _redacted_labels(labels, "")


def unique_key(key: str, taken: Mapping[str, object]) -> str:
    """``key``, or ``key_2``, ``key_3``, ... when a label key made alike is there already
    (``customer.tier`` and ``customer_tier``; ``1`` and ``"1"``; two card numbers, both
    masked): no value is dropped."""
    if key not in taken:
        return key
    number = 2
    while f"{key}_{number}" in taken:
        number += 1
    return f"{key}_{number}"


def _redacted_labels(labels: Mapping[str, LabelValue], parents: str) -> dict[str, LabelValue]:
    redacted: dict[str, LabelValue] = {}
    for name, value in labels.items():
        path = f"{parents}_{name}" if parents else name
        masked = MASK if is_secret_name(path) else _redacted_value(value, path)
        redacted[unique_key(redact(name), redacted)] = masked
    return redacted


def _redacted_value(value: LabelValue, path: str) -> LabelValue:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return _redacted_labels(value, path)
    # A name and its value as a pair (HTTP and Kafka headers: [("Authorization", ...)]): the
    # value is judged by the name, as in an object.
    if len(value) == 2 and isinstance(value[0], str) and is_secret_name(value[0]):
        return [redact(value[0]), MASK]
    # A command line as a list (["psql", "--password", "pw"]): the item after an option that
    # names a secret is masked, as redact() masks "--password pw" in text.
    redacted: list[LabelValue] = []
    secret_next = False
    for item in value:  # a list's items share its path
        redacted.append(MASK if secret_next else _redacted_value(item, path))
        secret_next = isinstance(item, str) and item.startswith("-") and is_secret_name(item)
    return redacted
