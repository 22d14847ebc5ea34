"""Secrets and Luhn-valid card numbers are masked; ordinary numbers and words are kept."""

import base64

import pytest

from pipeline.logs.redact import is_secret_name, luhn_valid, redact, redact_labels


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("login password=hunter2 ok", "login password=[REDACTED] ok"),
        ("db_password: s3cret", "db_password: [REDACTED]"),
        ('{"token": "abc.def", "user": "bob"}', '{"token": "[REDACTED]", "user": "bob"}'),
        ("api_key=AKIA123&x=1", "api_key=[REDACTED]&x=1"),
        ("X-Api-Key: 0123abcd", "X-Api-Key: [REDACTED]"),
        ("Authorization: Bearer eyJhbGciOi.xyz", "Authorization: Bearer [REDACTED]"),
        ("authorization=Basic dXNlcjpwYXNz", "authorization=Basic [REDACTED]"),
        ("client_secret='q w'", "client_secret='[REDACTED]'"),
        ("postgres://app:pa55@db:5432/x", "postgres://app:[REDACTED]@db:5432/x"),
        ("redis://:Hunter2v@cache:6379/0", "redis://:[REDACTED]@cache:6379/0"),
        # SQLAlchemy's own mask stays: one URL reads the same in the "database:" line and errors.
        ("postgresql+psycopg://app:***@db:5432/x", "postgresql+psycopg://app:***@db:5432/x"),
        ("postgres://app:****@db/x", "postgres://app:[REDACTED]@db/x"),
        # Dotted names, as configuration dumps print them; a secret word before a path's "=".
        ("secret.key=abc123", "secret.key=[REDACTED]"),
        ("token.value=abc123", "token.value=[REDACTED]"),
        ("jwt.secret.key: s3cr3t", "jwt.secret.key: [REDACTED]"),
        ("GET /api/token=abc123", "GET /api/token=[REDACTED]"),
        ("db.password:1234", "db.password:[REDACTED]"),
        # Kafka's bootstrap servers with a protocol: no URL scheme has capitals or "_".
        ("SASL_SSL://alice:Pw0rdZ@127.0.0.1:9", "SASL_SSL://alice:[REDACTED]@127.0.0.1:9"),
        ("SESSION_ID=abc; path=/", "SESSION_ID=[REDACTED]; path=/"),
        ("PROXY-AUTHORIZATION: Digest abc", "PROXY-AUTHORIZATION: Digest [REDACTED]"),
        # As a dict prints: single quotes around the name and the value.
        (
            "B {'Authorization': 'Bearer tokB', 'x': 1}",
            "B {'Authorization': 'Bearer [REDACTED]', 'x': 1}",
        ),
        ('{"authorization": "Basic dXNlcjpw"}', '{"authorization": "Basic [REDACTED]"}'),
        ("sent Bearer eyJ0eXAi.eyJzdWIi.sig== to it", "sent Bearer [REDACTED] to it"),
        ("reading: b'Bearer pgk_TOPSECRETzzzz'", "reading: b'Bearer [REDACTED]'"),
        # A placeholder in a sentence: its closing parenthesis stays.
        (
            "every request needs one (Authorization: Bearer <key>)",
            "every request needs one (Authorization: Bearer [REDACTED])",
        ),
        # Letters the case-insensitive patterns match but str.lower() keeps: the long s and the
        # Kelvin sign (the quick look for a secret word is only made on ASCII text).
        ("pa\u017fsword=hunter2", "pa\u017fsword=[REDACTED]"),
        # A command line: an option and its value after a space.
        ("ran: app --password hunter2 -v", "ran: app --password [REDACTED] -v"),
        (
            "app --db-password 'a b' --api-key k1",
            "app --db-password '[REDACTED]' --api-key [REDACTED]",
        ),
        ("app --auth Bearer tok9", "app --auth Bearer [REDACTED]"),
        ("ran --password hunter2: refused", "ran --password [REDACTED]: refused"),
        # A clause's colon after an unquoted secret is kept; a colon inside one is masked too.
        ("db?password=abc: refused", "db?password=[REDACTED]: refused"),
        ("token=abc:def done", "token=[REDACTED] done"),
        ("to\u212aen: abc123", "to\u212aen: [REDACTED]"),
        # A traceback's source line: the quote, parenthesis and comma around a secret stay.
        (
            'raise ValueError("failed with password=excsecret7")',
            'raise ValueError("failed with password=[REDACTED]")',
        ),
        ("f('token=t0k', retries=3)", "f('token=[REDACTED]', retries=3)"),
        ('run("app --password hunter2")', 'run("app --password [REDACTED]")'),
        # A quote inside a secret is not where it ends: nothing of it is left.
        ('password=ab"cd more', "password=[REDACTED] more"),
        # An escaped quote does not end a quoted secret; brackets do not end an unquoted one.
        ('password="with \\"quote\\" inside" next', 'password="[REDACTED]" next'),
        ("password='it\\'s' next", "password='[REDACTED]' next"),
        ('--password "a \\"b\\" c" next', '--password "[REDACTED]" next'),
        ("password=(paren)stuff) next", "password=[REDACTED]) next"),
        ("auth=[tok3n-y] next", "auth=[REDACTED] next"),
        ("f(password=abc) next", "f(password=[REDACTED]) next"),
        ("password=(x y z) rest", "password=[REDACTED] rest"),
        ("token=[a b c] rest", "token=[REDACTED] rest"),
        ('requests.get(u, auth=("bob", "hunter2"))', "requests.get(u, auth=[REDACTED])"),
        ("auth=('bob', 'hunter2') x", "auth=[REDACTED] x"),
    ],
)
def test_secrets_are_masked(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(
    "card", ["4111111111111111", "4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005"]
)
def test_luhn_valid_card_numbers_are_masked(card):
    assert redact(f"paid with {card} today") == "paid with [REDACTED] today"


@pytest.mark.parametrize(
    "text",
    [
        "order 4111111111111112 placed",  # fails Luhn
        "took 1234 ms",
        "epoch 1721044800123",  # 13 digits, fails Luhn
        "author=ann bypass_cache=true tokens",
        "version 1.2.3",
        # Inside ids: these digit runs pass the Luhn check but belong to a UUID or a word.
        "passed on 01a23e43-287b-76f9-8239-02327634674d",
        "id order4111111111111111 kept",
        "key 4111111111111111-a",
        # File names and paths that hold a secret word, as errors quote them.
        "my-passwd.jsonl:1: not a recorded message",
        "/etc/passwd: not valid TOML",
        "token_list.jsonl:3: bad line",
        # An option without a value (the next word is an option).
        "app --password -v",
    ],
)
def test_ordinary_text_is_kept(text):
    assert redact(text) == text


def test_luhn_check():
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert not luhn_valid("12ab")


def test_labels_with_secret_names_are_masked_whole():
    assert is_secret_name("refresh_token") and not is_secret_name("order_id")
    assert is_secret_name("authorization") and is_secret_name("Proxy-Authorization")
    assert redact_labels({"password": "x", "order_id": "o-1", "note": "token=t"}) == {
        "password": "[REDACTED]",
        "order_id": "o-1",
        "note": "token=[REDACTED]",
    }


def test_auth_as_a_word_of_a_name_is_a_secret_name_and_author_is_not():
    # An extra key "auth" went to Kafka and Elasticsearch as it was (an outside review).
    assert is_secret_name("auth") and is_secret_name("basic_auth") and is_secret_name("X-Auth")
    assert not is_secret_name("author") and not is_secret_name("authority")
    assert redact("auth=hunter2-auth, author=Ann") == "auth=[REDACTED], author=Ann"


def test_a_long_blob_that_spells_secret_words_is_kept_and_a_secret_after_it_masked():
    # Base64 spells "api", "pwd", "auth" now and then: the quick look for a name=value first
    # (a 400 kB blob took 1.6 s), and what it lets through is still masked.
    blob = base64.b64encode(bytes(range(256)) * 1_200).decode() + "+apiToken/pwdX"
    assert redact(f"blob {blob} end") == f"blob {blob} end"
    assert redact(f"{blob} db_password=hunter2") == f"{blob} db_password=[REDACTED]"


@pytest.mark.parametrize(
    "text",
    [
        "login password=hunter2 ok",
        'x {"token": "abc"}',
        "X-Api-Key: k",
        "jwt.secret.key: s",
        "db?password=abc: refused",
        "pa\u017fsword=hunter2",
        "'client_secret' = 'q'",
    ],
)
def test_the_quick_look_finds_every_name_value_the_full_pattern_finds(text):
    from pipeline.logs import redact as module

    assert module._NAME_VALUE.search(text) is not None
    assert module._NAME_VALUE_HINT.search(text) is not None


def test_nested_labels_are_redacted_at_every_depth_and_by_their_path():
    labels = {
        "a": {"b": [{"db_password": "x", "n": "card 4111-1111-1111-1111"}]},
        "session": {"id": "s-1", "user": "bob"},  # labels.session.id: a session id
        "keys": {"password=hunter2": "v", "sent Bearer abc": "w"},  # names are redacted too
    }

    assert redact_labels(labels) == {
        "a": {"b": [{"db_password": "[REDACTED]", "n": "card [REDACTED]"}]},
        "session": {"id": "[REDACTED]", "user": "bob"},
        "keys": {"password=[REDACTED]": "[REDACTED]", "sent Bearer [REDACTED]": "w"},
    }
