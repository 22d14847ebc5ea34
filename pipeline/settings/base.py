"""What every section of the settings shares: the frozen base with its checks of durations,
and how a URL is shown without its password."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    SecretStr,
    ValidationInfo,
    field_validator,
)

#: A query parameter of a URL that holds a secret (libpq's ``password``, ``sslpassword``), and
#: its value.
#: The words that make a name a secret's (``db_password``, ``X-Api-Key``): the log redactor's
#: and the URL masking's one list. "auth" counts as a word of the name only ("author" holds no
#: secret).
SECRET_WORDS = (
    r"passw(?:or)?d|passphrase|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|"
    r"private[_-]?key|credentials?|session[_-]?id|cookie|"
    r"(?<![a-z])auth(?![a-z])"
)
SECRET_QUERY_PARAMETER = re.compile(rf"([?&][^=&]*(?:{SECRET_WORDS})[^=&]*=)[^&]*", re.I)


def masked_url(value: str) -> str:
    """A URL setting as output may show it: whatever comes before an ``@`` (user and password,
    with a scheme or without one) is masked, and so is a secret query parameter's value."""
    value = SECRET_QUERY_PARAMETER.sub(r"\1[REDACTED]", value)
    head, at, rest = value.rpartition("@")
    if not at:
        return value
    scheme, sep, _ = head.partition("://")
    return f"{scheme}{sep}[REDACTED]@{rest}" if sep else f"[REDACTED]@{rest}"


def shown_url(value: str) -> str:
    """A URL setting as an error may quote it: :func:`masked_url`, quoted."""
    return repr(masked_url(value))


def http_url_problem(value: str) -> str | None:
    """What is wrong with ``value`` as an ``http(s)://host[:port]`` URL (its port a number up
    to 65535), in words that quote it without its password; ``None`` when nothing is."""
    if not value.startswith(("http://", "https://")):
        return f"expected an http:// or https:// URL, got {shown_url(value)}"
    if not _port_reads(value) or not urlsplit(value).hostname:
        return f"expected http(s)://host[:port], got {shown_url(value)}"
    if (problem := host_problem(urlsplit(value).hostname or "")) is not None:
        return f"{problem}, in {shown_url(value)}"
    return None


def host_problem(host: str) -> str | None:
    """What makes ``host`` no host name the network clients can look up (a label empty, as in
    ``a..b``, or over 63 characters: their IDNA encoding raised a traceback); ``None`` if
    nothing does. An IP address is a host name."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    name = host.removesuffix(".")  # one dot at the end: the root, which names nothing more
    try:
        name.encode("idna")
    except UnicodeError:
        name = ""
    if not name or any(not label for label in name.split(".")):
        return "the host name has an empty label or one over 63 characters"
    return None


def _port_reads(url: str) -> bool:
    """Whether ``url``'s port, when it names one, is a number from 0 to 65535."""
    try:
        urlsplit(url).port  # noqa: B018 (reading it checks it)
    except ValueError:
        return False
    return True


#: The longest duration a setting may give (``*_s``; ``*_ms`` a thousand times that): 100 years,
#: "for ever" for any of them. Past it the moments computed from it overflow: a retention of
#: 1e12 s ends before the year 1, and a wait that long is more than the clock takes.
LONGEST_S = 100 * 365.25 * 24 * 3600


#: The largest whole number a setting may give: a 64-bit signed integer, what the databases and
#: the Kafka client take.
LARGEST_INT = 2**63 - 1

#: The largest value of librdkafka's int properties (``message.timeout.ms``,
#: ``queue.buffering.max.messages``): an int32. Past it librdkafka read a negative number and
#: refused it, naming only its own property.
LIBRDKAFKA_INT_MAX = 2**31 - 1


def refuse_undecodable(value: Any) -> None:
    """Raise ``ValueError`` when ``value`` (a text, a secret, or a list or mapping of texts) holds
    bytes that were not UTF-8 (the environment's, which Python keeps as lone surrogates): the
    clients' C code aborted on them, or an encoder raised later with a traceback. The value is
    not quoted: it may be a secret."""
    texts: list[Any]
    if isinstance(value, Mapping):
        texts = [*value.keys(), *value.values()]
    elif isinstance(value, list | tuple):
        texts = list(value)
    else:
        texts = [value]
    for text in texts:
        if isinstance(text, SecretStr):
            text = text.get_secret_value()
        if isinstance(text, str) and not is_utf8(text):
            raise ValueError("is not UTF-8 text")


def is_utf8(text: str) -> bool:
    """Whether ``text`` is UTF-8 text: bytes of the environment or of argv that are not come
    as lone surrogates, which the clients' C code aborted on or an encoder later refused."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _Frozen(BaseModel):
    # hide_input_in_errors: a refused value is never quoted in the error (pydantic's
    # "input_value=..."), which may be a password or a URL holding one. allow_inf_nan: no
    # setting means anything by inf or nan (a poll interval of inf never looked again).
    model_config = ConfigDict(
        frozen=True, extra="forbid", hide_input_in_errors=True, allow_inf_nan=False
    )

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # repr and str (and rich's printing) show a URL setting without the password it may
        # hold (PIPELINE_DATABASE__URL=postgresql://app:pw@db/...): masked_url.
        for name, value in super().__repr_args__():
            if isinstance(value, str) and name is not None and name.endswith("url"):
                yield name, masked_url(value)
            else:
                yield name, value

    @field_validator("*", mode="after")
    @classmethod
    def _duration_fits(cls, value: Any, info: ValidationInfo) -> Any:
        """A duration (a number named ``*_s`` or ``*_ms``) is at most :data:`LONGEST_S`; any
        text is UTF-8 (:func:`refuse_undecodable`), any whole number fits a database's."""
        refuse_undecodable(value)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > LARGEST_INT:
            # A batch size of 1e20 passed, then the database refused it ("Python int too large
            # to convert to SQLite INTEGER"), naming no setting.
            raise ValueError(f"at most {LARGEST_INT:,}")
        name = info.field_name or ""
        if name.endswith("_per_s"):  # a rate (gateway.rate_per_s), not a duration
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            unit = "ms" if name.endswith("_ms") else "s" if name.endswith("_s") else None
            most = LONGEST_S * 1000 if unit == "ms" else LONGEST_S
            if unit is not None and value > most:
                raise ValueError(f"at most {most:.0f} {unit} (100 years)")
        return value
