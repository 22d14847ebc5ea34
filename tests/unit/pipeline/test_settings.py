from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.database import DatabaseError, build_engine
from pipeline.settings import (
    ELASTICSEARCH_VERSION,
    KAFKA_VERSION,
    DatabaseSettings,
    ElasticsearchSettings,
    KafkaSettings,
    PipelineSettings,
    complex_setting_variables,
    misspelled_settings,
    setting_variables,
)

pytestmark = pytest.mark.usefixtures("clean_pipeline_environment")


def test_defaults_point_at_the_local_stack():
    settings = PipelineSettings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.elasticsearch.url == "http://127.0.0.1:9200"
    assert settings.database.url.startswith("sqlite:///")
    assert settings.stack.kafka_version == KAFKA_VERSION == "3.9.1"
    assert settings.stack.elasticsearch_version == ELASTICSEARCH_VERSION


def test_nested_settings_come_from_prefixed_environment_variables(monkeypatch):
    monkeypatch.setenv("PIPELINE_KAFKA__BOOTSTRAP_SERVERS", "10.0.0.1:9092,10.0.0.2:9092")
    monkeypatch.setenv("PIPELINE_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("PIPELINE_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("PIPELINE_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("PIPELINE_KAFKA__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("PIPELINE_ELASTICSEARCH__API_KEY", "c2VjcmV0")
    monkeypatch.setenv("PIPELINE_STACK__HOME", "/srv/stack")
    settings = PipelineSettings()
    assert settings.kafka.bootstrap_servers == "10.0.0.1:9092,10.0.0.2:9092"
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "hunter2"
    assert settings.stack.home == Path("/srv/stack")


def test_secrets_never_appear_in_the_settings_text(monkeypatch):
    monkeypatch.setenv("PIPELINE_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("PIPELINE_KAFKA__SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("PIPELINE_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("PIPELINE_KAFKA__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("PIPELINE_ELASTICSEARCH__USERNAME", "elastic")
    monkeypatch.setenv("PIPELINE_ELASTICSEARCH__PASSWORD", "s3cr3t")
    monkeypatch.setenv("PIPELINE_DATABASE__PASSWORD", "pg-pass")
    settings = PipelineSettings()
    text = repr(settings) + str(settings) + settings.model_dump_json()
    for secret in ("hunter2", "s3cr3t", "pg-pass"):
        assert secret not in text


def test_a_password_inside_a_url_setting_is_not_in_the_settings_text(monkeypatch):
    # As the command line shows such a URL: the user info and a secret query parameter hidden.
    monkeypatch.setenv(
        "PIPELINE_DATABASE__URL",
        "postgresql+psycopg://app:pg-url-pass@db:5432/orders?sslpassword=key-pass&sslmode=require",
    )
    monkeypatch.setenv(
        "PIPELINE_ELASTICSEARCH__URL",
        "https://elastic:es-url-pass@es:9200/?api_key=es-key-1&x-api-key=es-key-2&apikey=es-key-3"
        "&passphrase=es-key-4&private_key=es-key-5&cookie=es-key-6&auth=es-key-7",
    )
    settings = PipelineSettings()
    text = repr(settings) + str(settings) + repr(settings.database) + str(settings.elasticsearch)

    secrets = ["pg-url-pass", "key-pass", "es-url-pass", *(f"es-key-{n}" for n in range(1, 8))]
    for secret in secrets:
        assert secret not in text
    assert "@db:5432/orders?sslpassword=[REDACTED]&sslmode=require" in text
    assert settings.database.url.startswith("postgresql+psycopg://app:pg-url-pass@")  # kept


def test_the_settings_and_their_sections_are_frozen():
    settings = PipelineSettings()
    with pytest.raises(ValidationError):
        settings.kafka.bootstrap_servers = "elsewhere:9092"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("PIPELINE_KAFKA__BOOTSTRAP_SERVERS", "localhost", "expected host:port"),
        (
            "PIPELINE_KAFKA__BOOTSTRAP_SERVERS",
            "a:9092,b:99999",
            "port 99999 of 'b:99999' is not between 1 and 65535",
        ),
        (
            "PIPELINE_KAFKA__BOOTSTRAP_SERVERS",
            "a b:1",
            "host 'a b' of 'a b:1' has whitespace in it: separate servers with commas",
        ),
        ("PIPELINE_KAFKA__BOOTSTRAP_SERVERS", "a:1,b\tc:2", "of 'b.tc:2' has whitespace"),
        ("PIPELINE_ELASTICSEARCH__URL", "127.0.0.1:9200", "http:// or https://"),
        ("PIPELINE_KAFKA__SECURITY_PROTOCOL", "TLS", "PLAINTEXT"),
        ("PIPELINE_ELASTICSEARCH__PASSWORD", "p", "a password needs a username"),
        ("PIPELINE_KAFKA__BOOTSTRAP_SERVERS", "http://127.0.0.1:9092", "not an http URL"),
        ("PIPELINE_GATEWAY__HOST", "", "at least 1 character"),  # every interface, unsaid
        ("PIPELINE_GATEWAY__HOST", " ", "should match pattern"),
        ("PIPELINE_LOGS__INDEX_ALIAS", "", "at least 1 character"),
        ("PIPELINE_PROCESSING__METRICS_PORT", "0", "greater than or equal to 1"),
        # No duration means anything by inf, nan or 1e12 s (before the year 1 as a retention).
        ("PIPELINE_OUTBOX__RETENTION_S", "inf", "finite number"),
        ("PIPELINE_OUTBOX__LEASE_S", "nan", "finite number"),
        ("PIPELINE_OUTBOX__POLL_INTERVAL_S", "Infinity", "finite number"),
        ("PIPELINE_OUTBOX__RETENTION_S", "1e12", "at most 3155760000 s .100 years."),
        ("PIPELINE_SAGAS__RETENTION_S", "1e12", "at most 3155760000 s .100 years."),
        ("PIPELINE_PROCESSING__SYNC_GROUP_WAIT_MS", "1e15", "at most 3155760000000 ms"),
        ("PIPELINE_PROCESSING__RETRY__MAX_BACKOFF_S", "inf", "finite number"),
        # TLS files librdkafka would never read: the client met a TLS listener in PLAINTEXT.
        (
            "PIPELINE_KAFKA__SSL_CA_LOCATION",
            "/etc/ca.crt",
            "kafka.ssl_ca_location needs kafka.security_protocol SSL or SASL_SSL .it is PLAINTEXT.",
        ),
        ("PIPELINE_PROCESSING__GROUP_INSTANCE_ID", "pod 2", "should match pattern"),
        ("PIPELINE_STACK__ELASTICSEARCH_HEAP", "1gb", "'1gb' is no JVM heap size"),
        ("PIPELINE_STACK__KAFKA_HEAP", "zz", "'zz' is no JVM heap size"),
        # The relay could only hold such an event for ever, as a topic that does not exist.
        (
            "PIPELINE_OUTBOX__ROUTES",
            '{"order": "bad topic!"}',
            "the route of 'order': 'bad topic!' is not a Kafka topic name",
        ),
        # Bytes of the environment that are not UTF-8 (lone surrogates in Python): the Kafka
        # client's constructor failed with a SystemError traceback.
        ("PIPELINE_KAFKA__CLIENT_ID", "svc\udcff", "is not UTF-8 text"),
        ("PIPELINE_SERVICE_NAME", "svc\udcfe", "is not UTF-8 text"),
        ("PIPELINE_DATABASE__PASSWORD", "pw\udcff", "is not UTF-8 text"),
        ("PIPELINE_OUTBOX__ROUTES", '{"order": "orders.\udcffevents"}', "is not UTF-8 text"),
        # Past what a database takes: saga prune failed, "Python int too large to convert to
        # SQLite INTEGER", naming no setting.
        (
            "PIPELINE_SAGAS__CLEANUP_BATCH_SIZE",
            "99999999999999999999",
            "at most 9,223,372,036,854,775,807",
        ),
        ("PIPELINE_PROCESSING__RETRY__MAX_BACKOFF_S", "1e20", "less than or equal to 3155760000"),
        # Hosts the network clients cannot encode: tracebacks from urllib3 and the event loop.
        ("PIPELINE_ELASTICSEARCH__URL", "http://a..b:9200", "the host name has an empty label"),
        ("PIPELINE_GATEWAY__HOST", "a" * 64 + ".example", "or one over 63 characters"),
        ("PIPELINE_GATEWAY__HOST", ".", "the host name has an empty label"),
        ("PIPELINE_ELASTICSEARCH__URL", "http://localhost..:9200", "has an empty label"),
    ],
)
def test_invalid_settings_are_refused_with_the_reason(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=message):
        PipelineSettings()


def test_a_sasl_protocol_without_a_mechanism_is_refused():
    # librdkafka would take GSSAPI, which it was not built with: a failure at the first client.
    with pytest.raises(ValidationError, match=r"SASL_SSL needs kafka\.sasl_mechanism"):
        KafkaSettings(security_protocol="SASL_SSL", sasl_username="u")


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_sasl_settings_without_a_sasl_protocol_are_refused_without_the_password(
    monkeypatch, protocol
):
    # PLAIN and a password over PLAINTEXT were accepted, the password unused (librdkafka's
    # warning from every client the only sign).
    monkeypatch.setenv("PIPELINE_KAFKA__SECURITY_PROTOCOL", protocol)
    monkeypatch.setenv("PIPELINE_KAFKA__SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("PIPELINE_KAFKA__SASL_PASSWORD", "hunter2")
    with pytest.raises(ValidationError) as refused:
        PipelineSettings()

    message = refused.value.errors()[0]["msg"]  # what `pipeline` prints of it
    assert message.endswith(
        "kafka.sasl_mechanism and kafka.sasl_password need kafka.security_protocol "
        f"SASL_PLAINTEXT or SASL_SSL (it is {protocol})"
    )
    assert "hunter2" not in str(refused.value)


def test_a_sasl_username_alone_without_a_sasl_protocol_is_refused_too():
    needs = r"kafka\.sasl_username needs kafka\.security_protocol SASL_PLAINTEXT or SASL_SSL"
    with pytest.raises(ValidationError, match=needs):
        KafkaSettings(sasl_username="svc")


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_a_sasl_user_without_a_password_or_a_password_without_a_user_is_refused(
    monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    # As a certificate without its key: it was refused only when a client was built, in
    # librdkafka's words ("sasl.username and sasl.password must be set").
    monkeypatch.setenv("PIPELINE_KAFKA__SECURITY_PROTOCOL", protocol)
    monkeypatch.setenv("PIPELINE_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("PIPELINE_KAFKA__SASL_USERNAME", "svc")
    with pytest.raises(ValidationError) as refused:
        PipelineSettings()
    assert refused.value.errors()[0]["msg"].endswith(
        "kafka.sasl_username needs kafka.sasl_password (the SASL user's password)"
    )

    monkeypatch.delenv("PIPELINE_KAFKA__SASL_USERNAME")
    monkeypatch.setenv("PIPELINE_KAFKA__SASL_PASSWORD", "hunter2")
    with pytest.raises(ValidationError) as refused:
        PipelineSettings()
    assert refused.value.errors()[0]["msg"].endswith(
        "kafka.sasl_password needs kafka.sasl_username (the SASL user it is the password of)"
    )
    assert "hunter2" not in str(refused.value)

    monkeypatch.setenv("PIPELINE_KAFKA__SASL_USERNAME", "svc")
    assert PipelineSettings().kafka.sasl_username == "svc"

    # Empty is missing (PIPELINE_KAFKA__SASL_PASSWORD=$SECRET with SECRET unset): it reached
    # librdkafka, whose error said "must be set" only when a client was built.
    monkeypatch.setenv("PIPELINE_KAFKA__SASL_PASSWORD", "")
    with pytest.raises(ValidationError, match=r"kafka\.sasl_password is empty"):
        PipelineSettings()
    monkeypatch.setenv("PIPELINE_KAFKA__SASL_PASSWORD", "hunter2")
    monkeypatch.setenv("PIPELINE_KAFKA__SASL_USERNAME", " ")
    with pytest.raises(ValidationError, match=r"kafka\.sasl_username is empty"):
        PipelineSettings()


@pytest.mark.parametrize(
    ("settings", "url"),
    [
        (ElasticsearchSettings, "http://127.0.0.1:notaport"),
        (DatabaseSettings, "postgresql+psycopg://app:s3cret@db:notaport/shop"),
    ],
)
def test_a_url_whose_port_is_no_number_is_refused_without_quoting_a_password(settings, url):
    with pytest.raises(ValidationError) as refused:
        settings(url=url)

    message = refused.value.errors()[0]["msg"]  # what `pipeline` prints of it
    assert "port" in message and "s3cret" not in message


@pytest.mark.parametrize("url", ["user:s3cret@es:9200", "ftp://user:s3cret@es:9200"])
def test_an_elasticsearch_url_without_http_is_refused_without_quoting_its_password(url):
    with pytest.raises(ValidationError) as refused:
        ElasticsearchSettings(url=url)

    message = refused.value.errors()[0]["msg"]
    assert "expected an http:// or https:// URL" in message
    assert "s3cret" not in message and "[REDACTED]@es:9200" in message


def test_a_database_url_that_does_not_read_is_refused_without_quoting_its_password():
    with pytest.raises(DatabaseError) as refused:
        build_engine(DatabaseSettings(url="u:s3cret@host/db"))

    assert str(refused.value) == "database.url is not a database URL: '[REDACTED]@host/db'"


def test_a_ca_certificate_for_an_http_elasticsearch_url_is_refused(tmp_path):
    with pytest.raises(ValidationError, match=r"ca_certs\) needs an https:// URL"):
        ElasticsearchSettings(url="http://127.0.0.1:9200", ca_certs=tmp_path / "ca.crt")


def test_a_setting_with_its_underscores_or_case_wrong_is_named_with_the_one_meant():
    # pydantic-settings ignores such a name: the setting silently kept its default (a typo
    # sent events to the default broker).
    found = misspelled_settings(
        [
            "PIPELINE_KAFKA_BOOTSTRAP_SERVERS",
            "PIPELINE_servicename",
            "PIPELINE_SAGAS__RETENTIONS",
            "PIPELINE_SAGAS__RETAIN",  # another word: pydantic's "extra input" says so
            "PIPELINE_KAFKA__BOOTSTRAP_SERVERS",
            "pipeline_kafka__bootstrap_servers",  # read whatever its case
            "PIPELINE_TEST_STACK",  # not a setting, nor like one: left alone
            "PATH",
            # A section misspelled was ignored whole (pydantic-settings reads no such section).
            "PIPELINE_PROCESING__MAX_IN_FLIGHT",
            "PIPELINE_OUTBOXX__NO_SUCH_FIELD",  # no such setting either: a name of one's own
            "PIPELINE_STAGE__NAME",  # like "STACK", but STACK has no NAME: left alone
            "PIPELINE_KAFKA__BOOTSTRAP_SERVER",  # pydantic said only "extra inputs ..."
            "PIPELINE_NOTHING_LIKE__IT",
        ]
    )

    assert found == {
        "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": "PIPELINE_KAFKA__BOOTSTRAP_SERVERS",
        "PIPELINE_servicename": "PIPELINE_SERVICE_NAME",
        "PIPELINE_SAGAS__RETENTIONS": "PIPELINE_SAGAS__RETENTION_S",
        "PIPELINE_PROCESING__MAX_IN_FLIGHT": "PIPELINE_PROCESSING__MAX_IN_FLIGHT",
        "PIPELINE_KAFKA__BOOTSTRAP_SERVER": "PIPELINE_KAFKA__BOOTSTRAP_SERVERS",
    }


def test_every_setting_has_its_variable():
    variables = setting_variables()
    assert "PIPELINE_KAFKA__BOOTSTRAP_SERVERS" in variables
    assert {"PIPELINE_GATEWAY__JWT", "PIPELINE_GATEWAY__JWT__ISSUER"} <= variables
    assert "PIPELINE_STACK__HOME" in variables
    assert "PIPELINE_SERVICE_NAME" in variables


def test_the_log_level_is_read_in_any_case(monkeypatch):
    monkeypatch.setenv("PIPELINE_LOGS__LEVEL", "debug")
    assert PipelineSettings().logs.level == "DEBUG"


def test_the_logs_dead_letters_go_beside_a_logs_topic_of_ones_own(monkeypatch):
    assert PipelineSettings().logs.dlq_topic == "logs.dlq"
    monkeypatch.setenv("PIPELINE_LOGS__TOPIC", "team.logs")
    assert PipelineSettings().logs.dlq_topic == "team.logs.dlq"
    monkeypatch.setenv("PIPELINE_LOGS__DLQ_TOPIC", "team.dead")
    assert PipelineSettings().logs.dlq_topic == "team.dead"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://pipeline:Sec@ret99@127.0.0.1:5432/x",
        "postgresql+psycopg://pipeline:Sec@ret99:more@127.0.0.1:5432/x",
        # A "/" or "?" in the rest ends the host there: the second "@" is further on.
        "postgresql+psycopg://pipeline:Sec@ret99/more@127.0.0.1:5432/x",
        "postgresql+psycopg://pipeline:Sec@ret99?more@127.0.0.1:5432/x",
        "postgresql+psycopg://pipeline:Sec@ret99:5432/more@127.0.0.1:5432/x",
        "postgresql+psycopg://pipeline@127.0.0.1:5432/x?password=Sec@ret99",
    ],
)
def test_a_database_password_with_an_at_sign_is_refused_with_how_to_write_it(url):
    # SQLAlchemy ends the password at its first "@" and takes the rest for the host: the
    # URL was shown as pipeline:***@ret99@127.0.0.1, and psycopg failed to resolve "ret99@...".
    with pytest.raises(ValidationError) as refused:
        DatabaseSettings(url=url)

    message = refused.value.errors()[0]["msg"]
    assert "percent-encode special characters in the password" in message
    assert "(@ as %40)" in message
    assert "ret99" not in message and "Sec" not in message


@pytest.mark.parametrize("special", ["/", "?", "#"])
def test_a_database_password_with_a_slash_question_or_hash_mark_reads_as_sqlalchemy_reads_it(
    special,
):
    from sqlalchemy.engine import make_url

    # Refused as "the port in the URL is not a number": urlsplit ends the user info at them,
    # SQLAlchemy (which builds the connection) only at the "@".
    url = f"postgresql+psycopg://pipeline:Sec{special}ret99@127.0.0.1:5432/x"

    read = make_url(DatabaseSettings(url=url).url)

    assert (read.password, read.host, read.port) == (f"Sec{special}ret99", "127.0.0.1", 5432)


def test_only_list_map_and_section_variables_take_json():
    takes_json = complex_setting_variables()

    assert {
        "PIPELINE_GATEWAY__TRUSTED_PROXIES",
        "PIPELINE_OUTBOX__ROUTES",
        "PIPELINE_GATEWAY__JWT",
        "PIPELINE_GATEWAY__JWT__ALGORITHMS",
        "PIPELINE_KAFKA",
        "PIPELINE_PROCESSING__RETRY",
    } <= takes_json
    assert (
        not {
            "PIPELINE_KAFKA__SASL_PASSWORD",
            "PIPELINE_DATABASE__PASSWORD",
            "PIPELINE_GATEWAY__JWT__SECRET",
            "PIPELINE_SERVICE_NAME",
        }
        & takes_json
    )


def test_a_refused_setting_is_never_quoted_in_the_validation_error(monkeypatch):
    # Through the Python API (and the pytest plugin's pipeline_settings fixture) pydantic's
    # error showed input_value='postgresql+psycopg://app...55@w/rd@db.internal/app'.
    monkeypatch.setenv("PIPELINE_DATABASE__URL", "postgresql+psycopg://app:Pa55@w/rd@h/app")
    with pytest.raises(ValidationError) as refused:
        PipelineSettings()
    assert "Pa55" not in str(refused.value) and "input_value" not in str(refused.value)

    with pytest.raises(ValidationError) as port:
        DatabaseSettings(url="postgresql://u:Pa55word@h:abc/db")
    assert "Pa55word" not in str(port.value)


def test_a_rate_per_second_is_no_duration(monkeypatch):
    monkeypatch.setenv("PIPELINE_GATEWAY__RATE_PER_S", "1e10")
    assert PipelineSettings().gateway.rate_per_s == 1e10


def test_a_duration_of_100_years_is_still_a_setting(monkeypatch):
    monkeypatch.setenv("PIPELINE_OUTBOX__RETENTION_S", "3155760000")
    assert PipelineSettings().outbox.retention_s == 3_155_760_000


def test_a_key_password_without_its_key_is_refused_even_on_tls():
    with pytest.raises(
        ValidationError, match=r"kafka\.ssl_key_password needs kafka\.ssl_key_location"
    ):
        KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="PLAIN", ssl_key_password="x")


def test_tls_files_with_both_settings_of_the_certificate_and_sasl_settings_need_tls_too():
    with pytest.raises(ValidationError, match=r"ssl_certificate_location and kafka\.ssl_key_loc"):
        KafkaSettings(
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            ssl_certificate_location="/c.pem",
            ssl_key_location="/k.pem",
        )


def test_a_tls_file_set_to_nothing_is_unset(monkeypatch):
    # A compose file's ${CA:-} gave the current folder, "." as a CA, which then needed SSL.
    monkeypatch.setenv("PIPELINE_KAFKA__SSL_CA_LOCATION", "")
    monkeypatch.setenv("PIPELINE_KAFKA__SSL_KEY_PASSWORD", "")
    kafka = PipelineSettings().kafka
    assert (kafka.ssl_ca_location, kafka.ssl_key_password) == (None, None)


def test_an_elasticsearch_api_key_read_with_its_line_break_is_the_key():
    # From a file or a Kubernetes secret: sent as it was, its line break was a traceback
    # quoting the key ("Invalid header value").
    settings = ElasticsearchSettings(api_key="S3cr3tKey==\n")

    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "S3cr3tKey=="


@pytest.mark.parametrize("key", ["", " ", "two words", "in\x00side", "line\nbreak"])
def test_an_elasticsearch_api_key_that_cannot_be_a_header_is_refused_unquoted(key):
    with pytest.raises(ValidationError) as refused:
        ElasticsearchSettings(api_key=key)

    message = str(refused.value.errors()[0]["msg"])
    assert "one word of printable characters" in message
    assert not key.strip() or key.split()[0] not in message


def test_kafka_servers_with_a_user_and_password_are_refused_without_quoting_them():
    with pytest.raises(ValidationError) as refused:
        KafkaSettings(bootstrap_servers="svc:S3cr3t-pw@broker-1:9092")

    message = str(refused.value.errors()[0]["msg"])
    assert "S3cr3t" not in message and "svc" not in message
    assert message.endswith("got ...@broker-1:9092")
