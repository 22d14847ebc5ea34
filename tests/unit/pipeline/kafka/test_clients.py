from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient
from cryptography.hazmat.primitives import serialization
from pydantic import SecretStr, ValidationError

from pipeline.errors import PipelineError
from pipeline.kafka import clients
from pipeline.kafka.clients import (
    build_admin,
    build_consumer,
    build_producer,
    check_producer,
    consumer_config,
    kafka_common_config,
    producer_config,
)
from pipeline.settings import KafkaSettings
from pipeline.stack.certificates import ensure_certificates


def test_plain_kafka_config_has_only_address_identity_and_protocol():
    assert kafka_common_config(KafkaSettings()) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "client.id": "pipeline",
        "security.protocol": "plaintext",
    }


def test_sasl_ssl_settings_map_to_librdkafka_names():
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password=SecretStr("pw"),
        ssl_ca_location="/etc/ca.pem",
    )
    config = kafka_common_config(kafka)
    assert config["security.protocol"] == "sasl_ssl"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.username"] == "svc"
    assert config["sasl.password"] == "pw"
    assert config["ssl.ca.location"] == "/etc/ca.pem"


def test_producers_are_idempotent_with_acks_all_and_java_compatible_partitioning():
    config = producer_config(KafkaSettings(), **{"linger.ms": 5})
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert config["partitioner"] == "murmur2_random"
    assert config["linger.ms"] == 5


def test_consumers_never_auto_commit():
    config = consumer_config(KafkaSettings(), "group-a")
    assert config["group.id"] == "group-a"
    assert config["enable.auto.commit"] is False


def test_building_clients_needs_no_reachable_broker():
    # Nothing answers at 127.0.0.1:1; construction must still succeed (librdkafka connects in
    # its own threads later), and the clients work locally without a broker.
    nowhere = KafkaSettings(bootstrap_servers="127.0.0.1:1")

    assert isinstance(build_admin(nowhere), AdminClient)

    producer = build_producer(nowhere)
    assert isinstance(producer, Producer)
    reports: list[int] = []
    producer.produce(
        "t", value=b"queued", on_delivery=lambda error, _: reports.append(error.code())
    )
    producer.purge()
    assert producer.flush(10) == 0
    assert reports == [KafkaError._PURGE_QUEUE]  # purged from the local queue: never sent

    consumer = build_consumer(nowhere, "g")
    assert isinstance(consumer, Consumer)
    assert consumer.assignment() == []
    consumer.close()


def test_a_config_librdkafka_refuses_is_one_error_line_for_every_client(tmp_path):
    not_a_certificate = tmp_path / "ca.crt"
    not_a_certificate.write_text("not a certificate")
    kafka = KafkaSettings(security_protocol="SSL", ssl_ca_location=not_a_certificate)
    for build in (
        lambda: build_admin(kafka),
        lambda: build_producer(kafka),
        lambda: build_consumer(kafka, "g"),
    ):
        with pytest.raises(PipelineError, match=r"ssl\.ca\.location failed") as refused:
            build()
        assert str(refused.value).startswith("cannot set up a Kafka client with these settings:")


def test_a_tls_file_that_is_not_there_is_named_with_its_setting(tmp_path):
    # librdkafka says only "ssl.ca.location failed: ... BIO lib" (OpenSSL's word).
    kafka = KafkaSettings(
        security_protocol="SSL",
        ssl_ca_location=tmp_path / "no-such-ca.crt",
        ssl_certificate_location=tmp_path / "no-such.crt",
        ssl_key_location=tmp_path / "no-such.key",
    )
    for build in (lambda: build_admin(kafka), lambda: build_producer(kafka)):
        with pytest.raises(PipelineError) as refused:
            build()
        assert str(refused.value) == (
            f"cannot set up a Kafka client: no file at {tmp_path / 'no-such-ca.crt'} "
            "(PIPELINE_KAFKA__SSL_CA_LOCATION)"
        )


def test_a_producers_settings_are_checked_as_building_it_would_without_connecting(
    tmp_path: Path,
) -> None:
    # What the Kafka log handler's settings are checked with before it is installed.
    missing = tmp_path / "no-such-ca.crt"
    with pytest.raises(PipelineError) as refused:
        check_producer(KafkaSettings(security_protocol="SSL", ssl_ca_location=missing))
    assert str(refused.value) == (
        f"cannot set up a Kafka client: no file at {missing} (PIPELINE_KAFKA__SSL_CA_LOCATION)"
    )
    with pytest.raises(PipelineError, match=r"see PIPELINE_PRODUCER__COMPRESSION"):
        check_producer(KafkaSettings(), **{"compression.type": "brotli"})
    check_producer(KafkaSettings(bootstrap_servers="127.0.0.1:1"), **{"linger.ms": 50})


def test_a_ca_folder_or_probe_is_not_taken_for_a_missing_file(tmp_path):
    assert clients.tls_file_problem({"ssl.ca.location": "probe"}) is None
    assert clients.tls_file_problem({"ssl.ca.location": str(tmp_path)}) is None
    assert clients.tls_file_problem({"ssl.certificate.location": str(tmp_path)}) == (
        f"no file at {tmp_path} (PIPELINE_KAFKA__SSL_CERTIFICATE_LOCATION)"
    )


def test_a_client_certificate_without_its_key_or_a_key_alone_is_a_settings_error(tmp_path):
    # Without ssl.key.location librdkafka sends no certificate, and the broker's "bad
    # certificate" alert pointed at the certificate instead.
    with pytest.raises(ValidationError, match=r"ssl_certificate_location needs kafka\.ssl_key_loc"):
        KafkaSettings(security_protocol="SSL", ssl_certificate_location=tmp_path / "c.crt")
    with pytest.raises(ValidationError, match=r"ssl_key_location needs kafka\.ssl_certificate_loc"):
        KafkaSettings(security_protocol="SSL", ssl_key_location=tmp_path / "c.key")


def test_an_encrypted_key_without_its_password_names_the_password_setting(tmp_path):
    files = ensure_certificates(tmp_path)
    key = serialization.load_pem_private_key(files.server_key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"right password"),
        )
    )
    for password in (None, SecretStr("wrong password")):
        kafka = KafkaSettings(
            security_protocol="SSL",
            ssl_ca_location=files.ca_certificate,
            ssl_certificate_location=files.server_certificate,
            ssl_key_location=encrypted,
            ssl_key_password=password,
        )
        with pytest.raises(PipelineError) as refused:
            build_admin(kafka)
        said = str(refused.value)
        assert said.startswith(f"cannot set up a Kafka client: the key at {encrypted} "), said
        assert "PIPELINE_KAFKA__SSL_KEY_PASSWORD" in said, said
        assert "wrong password" not in said and "right password" not in said


def test_a_key_of_another_certificate_is_said_so_not_blamed_on_the_password(tmp_path):
    files = ensure_certificates(tmp_path / "one")
    other = ensure_certificates(tmp_path / "other")
    kafka = KafkaSettings(
        security_protocol="SSL",
        ssl_ca_location=files.ca_certificate,
        ssl_certificate_location=files.server_certificate,
        ssl_key_location=other.server_key,
    )

    with pytest.raises(PipelineError) as refused:
        build_admin(kafka)

    assert str(refused.value) == (
        f"cannot set up a Kafka client: the key at {other.server_key} is not the key of the "
        f"certificate at {files.server_certificate} (PIPELINE_KAFKA__SSL_KEY_LOCATION, "
        "PIPELINE_KAFKA__SSL_CERTIFICATE_LOCATION)"
    )


def test_a_tls_file_or_folder_this_user_cannot_read_is_named_with_its_setting(
    tmp_path, monkeypatch
):
    # OpenSSL's words for it blamed the key's password ("system lib"), or the CA.
    key = tmp_path / "client.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    unreadable = {str(key), str(tmp_path)}
    monkeypatch.setattr(clients.os, "access", lambda path, mode: str(path) not in unreadable)

    assert clients.tls_file_problem({"ssl.key.location": str(key)}) == (
        f"cannot read {key} (PIPELINE_KAFKA__SSL_KEY_LOCATION): permission denied for this user"
    )
    assert clients.tls_file_problem({"ssl.ca.location": str(tmp_path)}) == (
        f"cannot read {tmp_path} (PIPELINE_KAFKA__SSL_CA_LOCATION): permission denied for this user"
    )
