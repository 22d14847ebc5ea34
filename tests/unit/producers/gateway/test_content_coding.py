"""Content codings of request bodies: which are accepted, and decoding within the size limit."""

from __future__ import annotations

import gzip
import zlib

import pytest

from producers.gateway.answers import ErrorAnswer
from producers.gateway.content_coding import content_coding, decode

BODY = b'{"order_id": "o-1"}'


def gz(data: bytes) -> bytes:
    """gzip without a time in its header: the same bytes, so the same test ids, in every
    process (pytest-xdist's workers must collect the same tests)."""
    return gzip.compress(data, mtime=0)


def refusal(check, *args) -> ErrorAnswer:
    with pytest.raises(ErrorAnswer) as caught:
        check(*args)
    return caught.value


@pytest.mark.parametrize(
    ("values", "coding"),
    [([], "identity"), (["identity"], "identity"), (["GZip"], "gzip"), ([" deflate "], "deflate"),
     (["identity, gzip"], "gzip")],
)  # fmt: skip
def test_identity_gzip_and_deflate_are_accepted(values, coding):
    assert content_coding(values) == coding


@pytest.mark.parametrize("values", [["br"], ["foo"], ["zstd"], ["gzip, gzip"], ["gzip", "br"]])
def test_any_other_coding_is_415_naming_it_and_what_is_accepted(values):
    answer = refusal(content_coding, values)

    assert (answer.status, answer.code) == (415, "unsupported_encoding")
    assert answer.headers == {"Accept-Encoding": "gzip, deflate"}
    assert repr(", ".join(values)) in answer.message
    assert "gzip, deflate" in answer.message


@pytest.mark.parametrize(
    ("coding", "encoded"),
    [("identity", BODY), ("gzip", gz(BODY)), ("deflate", zlib.compress(BODY)),
     ("deflate", zlib.compress(BODY, wbits=-zlib.MAX_WBITS)),  # raw deflate, as some send it
     ("gzip", gz(BODY[:5]) + gz(BODY[5:]))],  # two gzip members
)  # fmt: skip
def test_a_body_decodes_from_its_coding(coding, encoded):
    assert decode(encoded, coding, 1000) == BODY


@pytest.mark.parametrize(
    ("coding", "encoded", "reason"),
    [("gzip", b"not gzip", "incorrect header check"),
     ("deflate", b"not gzip", "incorrect header check"),
     ("gzip", gz(BODY)[:-6], "it ends before its end"),
     ("gzip", gz(BODY) + b"xx", "incorrect header check"),  # not a next member
     ("deflate", zlib.compress(BODY) + b"xx", "2 bytes follow its end")],
)  # fmt: skip
def test_a_body_not_valid_in_its_coding_is_400_invalid_body(coding, encoded, reason):
    answer = refusal(decode, encoded, coding, 1000)

    assert (answer.status, answer.code) == (400, "invalid_body")
    assert answer.message == (
        f"the body is not valid {coding} (Content-Encoding: {coding}): {reason}"
    )


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_a_small_body_that_unfolds_past_the_limit_is_413(coding):
    bomb = gz(b" " * 1_000_000) if coding == "gzip" else zlib.compress(b" " * 10**6)

    answer = refusal(decode, bomb, coding, 65536)

    assert (answer.status, answer.code) == (413, "body_too_large")
    assert decode(gz(b" " * 65536), "gzip", 65536) == b" " * 65536  # the limit is in
