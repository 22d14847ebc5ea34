"""The secure stack's pure parts: certificates, credentials, client settings, node configs."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import stat

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from pipeline.settings import PipelineSettings, StackSettings
from pipeline.stack import elasticsearch_node, kafka_node, postgres_node
from pipeline.stack.certificates import ensure_certificates
from pipeline.stack.secure import Credentials, SecureStack, env_file_text, redact


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_ca_signs_a_server_certificate_for_localhost_and_keys_are_private(tmp_path):
    files = ensure_certificates(tmp_path / "certs")
    ca = x509.load_pem_x509_certificate(files.ca_certificate.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_certificate.read_bytes())
    ca_key = ca.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    server.verify_directly_issued_by(ca)  # raises when the CA did not sign it
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert _mode(files.ca_key) == 0o600 and _mode(files.server_key) == 0o600
    assert b"PRIVATE KEY" in files.server_key.read_bytes()


def test_certificates_are_made_once_and_kept(tmp_path):
    first = ensure_certificates(tmp_path).server_certificate.read_bytes()
    assert ensure_certificates(tmp_path).server_certificate.read_bytes() == first


def _secure(tmp_path) -> SecureStack:
    return SecureStack(PipelineSettings(stack=StackSettings(home=tmp_path / "home")))


def test_the_secure_stack_has_its_own_home_ports_and_generated_passwords(
    tmp_path, clean_pipeline_environment
):
    secure = _secure(tmp_path)
    credentials = secure.prepare()
    settings = secure.settings()
    assert settings.stack.home == tmp_path / "home" / "secure"
    assert settings.stack.dist_dir == tmp_path / "home" / "dist"  # shared with the plain stack
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9102"
    assert settings.stack.kafka_controller_port == 9103
    assert settings.elasticsearch.url == "https://127.0.0.1:9210"
    assert settings.stack.elasticsearch_transport_port == 9310
    assert settings.stack.postgres_port == 5442
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka.sasl_password == credentials.kafka
    assert settings.elasticsearch.password == credentials.elasticsearch
    assert settings.database.password == credentials.postgres
    assert settings.database.url.endswith(
        f"@127.0.0.1:5442/pipeline?sslmode=verify-full&sslrootcert={secure.certificates.ca_certificate}"
    )
    assert len(set(credentials.values())) == 3
    for path in (secure.credentials_file, secure.env_file, secure.librdkafka_file):
        assert _mode(path) == 0o600
    # made once: a second prepare keeps the passwords
    assert secure.prepare() == credentials


def test_the_env_file_holds_the_passwords_and_the_printed_settings_do_not(
    tmp_path, clean_pipeline_environment
):
    secure = _secure(tmp_path)
    credentials = secure.prepare()
    written = secure.env_file.read_text()
    printed = env_file_text(secure.settings(), with_secrets=False)
    for password in credentials.values():
        assert f"={password}\n" in written
        assert password not in printed
    assert "PIPELINE_KAFKA__SASL_PASSWORD=<secret>\n" in printed
    assert "PIPELINE_KAFKA__SECURITY_PROTOCOL=SASL_SSL\n" in printed
    properties = secure.librdkafka_file.read_text()
    assert "security.protocol=sasl_ssl\n" in properties
    assert f"sasl.password={credentials.kafka.get_secret_value()}\n" in properties


def test_redact_replaces_every_password():
    credentials = Credentials(SecretStr("k-pass"), SecretStr("e-pass"), SecretStr("p-pass"))
    assert redact("a k-pass b e-pass c p-pass", credentials) == "a *** b *** c ***"
    assert redact("k-pass", None) == "k-pass"


def test_the_secure_kafka_listens_on_sasl_ssl_with_its_pem_inline(tmp_path):
    text = kafka_node.secure_server_properties(
        "127.0.0.1",
        9102,
        9103,
        tmp_path,
        username="pipeline",
        password="s3cret",
        server_certificate_pem="-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n",
        server_key_pem="-----BEGIN PRIVATE KEY-----\nBBB\n-----END PRIVATE KEY-----\n",
        ca_certificate=tmp_path / "ca.crt",
    )
    props = dict(line.split("=", 1) for line in text.splitlines())
    assert props["listeners"] == "SASL_SSL://127.0.0.1:9102,CONTROLLER://127.0.0.1:9103"
    assert props["advertised.listeners"] == "SASL_SSL://127.0.0.1:9102"
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["listener.security.protocol.map"] == "SASL_SSL:SASL_SSL,CONTROLLER:SSL"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["ssl.client.auth"] == "none"  # clients of the SASL_SSL listener need none
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["ssl.keystore.key"] == (
        "-----BEGIN PRIVATE KEY-----\\nBBB\\n-----END PRIVATE KEY-----"
    )
    assert (
        'username="pipeline" password="s3cret";'
        in props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    )
    assert len([line for line in text.splitlines() if line.startswith("listeners=")]) == 1
    assert kafka_node.scram_arguments("SCRAM-SHA-512", "pipeline", "pw") == [
        "--add-scram",
        "SCRAM-SHA-512=[name=pipeline,password=pw]",
    ]


def test_the_secure_elasticsearch_turns_security_and_https_on(tmp_path):
    text = elasticsearch_node.secure_elasticsearch_yml("127.0.0.1", 9210, 9310, tmp_path, tmp_path)
    settings = dict(line.split(": ", 1) for line in text.splitlines())
    assert settings["xpack.security.enabled"] == "true"
    assert settings["xpack.security.http.ssl.enabled"] == "true"
    assert settings["xpack.security.http.ssl.key"] == "certs/server.key"
    assert settings["http.port"] == "9210"


def test_the_file_realm_hash_is_pbkdf2_sha512_of_the_password():
    salt = bytes(range(32))
    users, roles = elasticsearch_node.file_realm_users("pipeline", "pw", salt)
    name, hashed = users.strip().split(":", 1)
    prefix_cost, salt_b64, key_b64 = hashed.split("$")
    assert (name, prefix_cost, roles) == ("pipeline", "{PBKDF2}10000", "superuser:pipeline\n")
    assert base64.b64decode(salt_b64) == salt
    expected = hashlib.pbkdf2_hmac("sha512", b"pw", salt, 10_000, dklen=32)
    assert base64.b64decode(key_b64) == expected


def test_the_secure_postgres_accepts_tcp_only_over_tls(tmp_path):
    hba = postgres_node.secure_pg_hba_conf()
    rules = [line.split() for line in hba.splitlines() if not line.startswith("#")]
    assert ["hostssl", "all", "all", "127.0.0.1/32", "scram-sha-256"] in rules
    assert not any(rule[0] == "host" for rule in rules)
    conf = postgres_node.secure_postgresql_conf(
        5442, tmp_path, tmp_path / "server.crt", tmp_path / "server.key"
    )
    assert "ssl = on\n" in conf
    assert f"ssl_key_file = '{tmp_path / 'server.key'}'\n" in conf
