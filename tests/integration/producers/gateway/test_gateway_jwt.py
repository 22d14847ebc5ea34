"""JWT bearer tokens through a running `pipeline gateway` (real Kafka), verified against a JWKS
file: a valid token is produced, expired / wrong-audience / wrong-signature tokens are 401, a
type outside its scope is 403, and no token appears in what the gateway printed."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.settings import PipelineSettings
from tests.support.gateway_process import GatewayProcess, high_watermarks, messages_since, order

ISSUER = "https://id.example.com/"
AUDIENCE = "pipeline-gateway"


def jwks(path: Path, kid: str, key: ec.EllipticCurvePrivateKey) -> Path:
    public = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    path.write_text(json.dumps({"keys": [{**public, "kid": kid, "alg": "ES256", "use": "sig"}]}))
    return path


def es256(key: ec.EllipticCurvePrivateKey, **changes: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "billing-service",
        "iat": now,
        "exp": now + 300,
        "scope": "openid requests:place_order",
        **changes,
    }
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": "key-1"})


def test_jwt_valid_expired_wrong_audience_wrong_signature_and_not_allowed(
    tmp_path: Path, pipeline_settings: PipelineSettings, catalogue_topics
):
    key = ec.generate_private_key(ec.SECP256R1())
    impostor = ec.generate_private_key(ec.SECP256R1())
    env = {
        "PIPELINE_DATABASE__URL": f"sqlite:///{tmp_path / 'gateway.db'}",
        "PIPELINE_GATEWAY__JWT__ISSUER": ISSUER,
        "PIPELINE_GATEWAY__JWT__AUDIENCE": AUDIENCE,
        "PIPELINE_GATEWAY__JWT__ALGORITHMS": '["ES256"]',
        "PIPELINE_GATEWAY__JWT__JWKS_FILE": str(jwks(tmp_path / "jwks.json", "key-1", key)),
        "PIPELINE_LOGS__LEVEL": "DEBUG",
    }
    tokens = {
        "valid": es256(key),
        "expired": es256(key, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
        "wrong audience": es256(key, aud="another-service"),
        "wrong signature": es256(impostor),
        "not allowed": es256(key),
    }
    request_types = {name: "place_order" for name in tokens} | {"not allowed": "cancel_order"}
    order_id = f"jwt-{uuid.uuid4().hex[:8]}"
    start = high_watermarks(pipeline_settings, "requests.orders")
    gateway = GatewayProcess(tmp_path / "gateway.log", env)
    try:
        answers = {
            name: gateway.post(
                request_types[name], order(order_id), {"Authorization": f"Bearer {token}"}
            )
            for name, token in tokens.items()
        }
        anonymous = gateway.post("place_order", order(order_id))
    finally:
        code = gateway.stop()
    produced = [
        value
        for message_key, value, _ in messages_since(pipeline_settings, "requests.orders", start)
        if message_key == order_id.encode()
    ]

    statuses = {name: status for name, (status, _, _) in answers.items()}
    assert statuses == {
        "valid": 202,
        "expired": 401,
        "wrong audience": 401,
        "wrong signature": 401,
        "not allowed": 403,
    }
    assert anonymous[0] == 401 and anonymous[1]["WWW-Authenticate"].startswith("Bearer")
    messages = {
        name: body["error"]["message"] for name, (_, _, body) in answers.items() if "error" in body
    }
    assert messages == {
        "expired": "the token has expired",
        "wrong audience": "the token is not meant for this gateway (aud)",
        "wrong signature": "the token's signature is not valid",
        "not allowed": "the token of 'billing-service' may not send 'cancel_order' requests; "
        "it may send: place_order",
    }
    assert len(produced) == 1  # only the valid token's request reached Kafka
    assert code == 0
    output = gateway.output()
    assert "client jwt:billing-service" in output  # its log line names the token's client
    assert "gateway is open" not in output
    for token in tokens.values():
        for part in token.split("."):
            assert part not in output
