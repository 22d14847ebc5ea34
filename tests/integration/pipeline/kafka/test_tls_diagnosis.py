"""A broker certificate librdkafka could not verify is said with the check that failed: a
certificate for another address than the one in the settings, or signed by another CA
(librdkafka's own line sends the user to the CA either way). The "broker" here is a TLS server
of the test's own, which is all a handshake needs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.kafka.clients import build_admin
from pipeline.kafka.tls_diagnosis import certificate_refusal
from pipeline.ports import free_port
from pipeline.settings import KafkaSettings
from pipeline.stack.certificates import ensure_certificates
from pipeline.topics.admin import KafkaRefusedError, list_cluster_topics
from tests.support.tls_server import tls_server as serving_tls


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A TLS server on 127.0.0.2 whose certificate names localhost and 127.0.0.1 only."""
    with serving_tls(tmp_path / "tls", host="127.0.0.2") as served:
        yield served


def _config(address: str, ca: Path) -> dict[str, str]:
    return {"bootstrap.servers": address, "security.protocol": "SSL", "ssl.ca.location": str(ca)}


def test_a_certificate_for_another_address_is_said_so(tls_server):
    address, ca = tls_server

    why = certificate_refusal(_config(address, ca))

    assert why is not None and "IP address mismatch" in why, why
    assert "127.0.0.2" in why and "PIPELINE_KAFKA__BOOTSTRAP_SERVERS" in why, why


def test_in_a_list_of_brokers_the_one_whose_certificate_fails_says_it(tls_server):
    # Production lists several brokers; only the first was asked, and a first broker that was
    # down brought librdkafka's advice to look at the CA back.
    address, ca = tls_server
    nobody = f"127.0.0.1:{free_port()}"

    why = certificate_refusal(_config(f"{nobody}, {address}", ca))

    assert why is not None and "IP address mismatch" in why, why


def test_a_certificate_of_another_ca_names_the_ca_setting(tls_server, tmp_path):
    address, _ca = tls_server
    other_ca = ensure_certificates(tmp_path / "other").ca_certificate

    why = certificate_refusal(_config(address, other_ca))

    assert why is not None and "PIPELINE_KAFKA__SSL_CA_LOCATION" in why, why


def test_a_check_turned_off_or_a_plaintext_client_asks_nothing(tls_server):
    address, ca = tls_server
    no_name_check = {**_config(address, ca), "ssl.endpoint.identification.algorithm": "none"}

    assert certificate_refusal(no_name_check) is None
    assert certificate_refusal({**_config(address, ca), "security.protocol": "PLAINTEXT"}) is None


def test_a_kafka_command_says_which_check_failed_in_its_one_line(tls_server):
    address, ca = tls_server
    kafka = KafkaSettings(bootstrap_servers=address, security_protocol="SSL", ssl_ca_location=ca)

    with pytest.raises(KafkaRefusedError) as refused:
        list_cluster_topics(build_admin(kafka), bootstrap=address, timeout_s=20)

    said = str(refused.value)
    assert "certificate verify failed: IP address mismatch" in said, said
    assert "ssl.ca.location is correctly configured" not in said, said
