"""JWT verification: signature, exp/nbf/iat with leeway, iss, aud, sub, the allowed algorithms
and keys (secret, PEM public key, JWKS by kid), the request types of the scope claim, and
rejections that never quote the token or the key."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pipeline.errors import PipelineError
from pipeline.settings import JwtSettings, PipelineSettings
from producers.gateway.tokens import TokenRejected, TokenVerifier, load_token_verifier

SECRET = "s" * 16 + "-a-shared-secret-of-32+-bytes"
ISSUER = "https://id.example.com/"
AUDIENCE = "pipeline-gateway"
HS256 = JwtSettings(
    issuer=ISSUER, audience=AUDIENCE, algorithms=["HS256"], secret=SECRET, leeway_s=30
)
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_EC_KEY = ec.generate_private_key(ec.SECP256R1())


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "shop-backend",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "scope": "openid requests:place_order requests:cancel_order",
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def hs256(**changes: Any) -> str:
    return jwt.encode(claims(**changes), SECRET, algorithm="HS256")


def base64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def jwks_file(tmp_path: Path, *keys: tuple[str, ec.EllipticCurvePrivateKey]) -> Path:
    entries = []
    for kid, key in keys:
        entry = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        entries.append({**entry, "kid": kid, "alg": "ES256", "use": "sig"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": entries}))
    return path


def rejection(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(TokenRejected) as rejected:
        verifier.verify(token)
    message = str(rejected.value)
    for part in [token, *token.split("."), SECRET]:
        assert len(part) < 8 or part not in message  # never quotes the token or the key
    return message


def test_a_valid_token_is_its_subject_with_the_request_types_of_its_scope():
    client = TokenVerifier(HS256, SECRET).verify(hs256())

    assert client.name == "jwt:shop-backend"
    assert client.request_types == {"place_order", "cancel_order"}  # not 'openid'
    assert client.may_send("place_order") and not client.may_send("register_customer")


def test_a_scope_given_as_a_list_and_a_prefix_of_ones_own_name_the_types():
    settings = HS256.model_copy(update={"types_claim": "permissions", "scope_prefix": "gw/"})
    token = hs256(permissions=["gw/register_customer", "read:all", "gw/"])

    client = TokenVerifier(settings, SECRET).verify(token)

    assert client.request_types == {"register_customer"}


def test_a_valid_token_without_the_scope_claim_may_send_nothing():
    assert TokenVerifier(HS256, SECRET).verify(hs256(scope=None)).request_types == frozenset()


def test_an_expired_token_is_rejected_but_one_within_the_leeway_is_not():
    verifier = TokenVerifier(HS256, SECRET)
    now = int(time.time())

    assert rejection(verifier, hs256(exp=now - 60)) == "the token has expired"
    assert verifier.verify(hs256(exp=now - 10)).subject == "shop-backend"  # 30 s of leeway


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_a_token_not_valid_yet_is_rejected_beyond_the_leeway(claim):
    verifier = TokenVerifier(HS256, SECRET)
    now = int(time.time())

    assert "not valid yet" in rejection(verifier, hs256(**{claim: now + 120}))
    assert verifier.verify(hs256(**{claim: now + 10})).subject == "shop-backend"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"aud": "another-service"}, "the token is not meant for this gateway (aud)"),
        ({"aud": ["another-service", "yet-another"]}, "not meant for this gateway"),
        ({"iss": "https://evil.example.com/"}, "the token's issuer is not trusted (iss)"),
        ({"exp": None}, "the token lacks the 'exp' claim"),
        ({"sub": None}, "the token lacks the 'sub' claim"),
        ({"aud": None}, "the token lacks the 'aud' claim"),
        ({"sub": 42}, "the token's 'sub' claim must name its holder"),
        ({"sub": "   "}, "the token's 'sub' claim must name its holder"),
        # Past the store's 255 characters of a client (with "jwt:"): every claim of its batch
        # failed, other clients' too; a NUL or a line break in it forged log lines.
        ({"sub": "s" * 252}, "the token's 'sub' claim must be at most 251 printable characters"),
        ({"sub": "shop\x00evil"}, "at most 251 printable characters"),
        ({"sub": "shop\nINFO forged"}, "at most 251 printable characters"),
    ],
)
def test_a_token_for_someone_else_or_lacking_a_claim_is_rejected(changes, reason):
    assert reason in rejection(TokenVerifier(HS256, SECRET), hs256(**changes))


def test_a_subject_of_251_characters_fits_the_store():
    verifier = TokenVerifier(HS256, SECRET)

    assert len(verifier.verify(hs256(sub="s" * 251)).name) == 255


def test_an_audience_list_that_includes_ours_is_accepted():
    token = hs256(aud=["another-service", AUDIENCE])

    assert TokenVerifier(HS256, SECRET).verify(token).subject == "shop-backend"


def test_a_token_signed_with_another_secret_is_rejected():
    forged = jwt.encode(claims(), "x" * 40, algorithm="HS256")

    assert rejection(TokenVerifier(HS256, SECRET), forged) == "the token's signature is not valid"


def test_an_unsigned_token_alg_none_is_rejected():
    unsigned = jwt.encode(claims(), None, algorithm="none")

    assert "algorithm is not accepted" in rejection(TokenVerifier(HS256, SECRET), unsigned)


def test_a_token_with_an_algorithm_not_in_the_list_is_rejected():
    hs512 = jwt.encode(claims(), SECRET * 2, algorithm="HS512")

    assert rejection(TokenVerifier(HS256, SECRET), hs512) == (
        "the token's algorithm is not accepted (accepted: HS256)"
    )


def test_an_rs256_gateway_refuses_an_hs256_token_signed_with_its_public_key():
    settings = JwtSettings(
        issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256"], public_key_file=Path("unused")
    )
    verifier = TokenVerifier(settings, RSA_KEY.public_key())
    # Signed by hand: PyJWT itself refuses to use a public key as an HMAC secret.
    signing_input = b".".join(
        base64url(json.dumps(part).encode()) for part in ({"alg": "HS256"}, claims())
    )
    signature = hmac.new(public_pem(RSA_KEY), signing_input, hashlib.sha256).digest()
    confused = (signing_input + b"." + base64url(signature)).decode()

    assert "algorithm is not accepted" in rejection(verifier, confused)
    assert verifier.verify(jwt.encode(claims(), RSA_KEY, algorithm="RS256")).subject


@pytest.mark.parametrize("garbage", ["not-a-jwt", "a.b.c", "....."])
def test_garbage_is_not_a_well_formed_jwt(garbage):
    assert rejection(TokenVerifier(HS256, SECRET), garbage) == "the token is not a well-formed JWT"


def test_a_public_key_file_verifies_rs256_tokens(tmp_path: Path):
    pem = tmp_path / "key.pem"
    pem.write_bytes(public_pem(RSA_KEY))
    settings = JwtSettings(
        issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256"], public_key_file=pem
    )
    verifier = load_token_verifier(settings)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    assert verifier.verify(jwt.encode(claims(), RSA_KEY, algorithm="RS256")).subject
    forged = jwt.encode(claims(), other, algorithm="RS256")
    assert rejection(verifier, forged) == "the token's signature is not valid"


def test_a_jwks_file_picks_the_key_by_kid(tmp_path: Path):
    settings = JwtSettings(
        issuer=ISSUER,
        audience=AUDIENCE,
        algorithms=["ES256"],
        jwks_file=jwks_file(tmp_path, ("one", EC_KEY), ("two", OTHER_EC_KEY)),
    )
    verifier = load_token_verifier(settings)

    def es256(kid: str | None, key: ec.EllipticCurvePrivateKey) -> str:
        headers = {} if kid is None else {"kid": kid}
        return jwt.encode(claims(), key, algorithm="ES256", headers=headers)

    assert verifier.verify(es256("one", EC_KEY)).subject == "shop-backend"
    assert verifier.verify(es256("two", OTHER_EC_KEY)).subject == "shop-backend"
    assert rejection(verifier, es256("one", OTHER_EC_KEY)) == "the token's signature is not valid"
    assert rejection(verifier, es256("three", EC_KEY)) == (
        "the token's 'kid' is not one of the JWKS's keys"
    )
    assert "no 'kid'" in rejection(verifier, es256(None, EC_KEY))


def test_a_jwks_of_one_key_needs_no_kid(tmp_path: Path):
    settings = JwtSettings(
        issuer=ISSUER,
        audience=AUDIENCE,
        algorithms=["ES256"],
        jwks_file=jwks_file(tmp_path, ("only", EC_KEY)),
    )

    token = jwt.encode(claims(), EC_KEY, algorithm="ES256")

    assert load_token_verifier(settings).verify(token).subject == "shop-backend"


def test_key_files_that_cannot_be_used_stop_the_start_with_one_line(tmp_path: Path):
    base = {"issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["ES256"]}
    private = tmp_path / "private.json"
    private.write_text(
        json.dumps({"keys": [json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY))]})
    )
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")

    with pytest.raises(PipelineError, match=r"cannot read .*missing\.json"):
        load_token_verifier(JwtSettings(**base, jwks_file=tmp_path / "missing.json"))
    with pytest.raises(PipelineError, match="not a JWKS file"):
        load_token_verifier(JwtSettings(**base, jwks_file=not_pem))
    with pytest.raises(PipelineError, match="holds private keys"):
        load_token_verifier(JwtSettings(**base, jwks_file=private))
    with pytest.raises(PipelineError, match="not a PEM public key") as refused:
        load_token_verifier(JwtSettings(**base, public_key_file=not_pem))
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "setting", ["PIPELINE_GATEWAY__JWT__PUBLIC_KEY_FILE", "PIPELINE_GATEWAY__JWT__JWKS_FILE"]
)
def test_a_key_file_that_cannot_be_read_names_the_setting_that_names_it(
    clean_pipeline_environment: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    setting: str,
):
    # It said only "cannot read /tmp/x/nokey.pem: ...", where other settings name their variable.
    missing = tmp_path / "x" / "nokey.pem"
    monkeypatch.setenv("PIPELINE_GATEWAY__JWT__ISSUER", ISSUER)
    monkeypatch.setenv("PIPELINE_GATEWAY__JWT__AUDIENCE", AUDIENCE)
    monkeypatch.setenv("PIPELINE_GATEWAY__JWT__ALGORITHMS", '["ES256"]')
    monkeypatch.setenv(setting, str(missing))
    jwt_settings = PipelineSettings().gateway.jwt  # the variable named is the setting read
    assert jwt_settings is not None

    with pytest.raises(PipelineError) as refused:
        load_token_verifier(jwt_settings)

    assert str(refused.value) == f"cannot read {setting} ({missing}): No such file or directory"


@pytest.mark.parametrize(
    ("key", "said"),
    [
        (
            {"kid": "k1", "kty": "RSA", "n": 5, "e": "AQAB"},
            "has no key the gateway can use: key 0 (kid 'k1') is not a usable JWK: Unable to "
            "construct key from JWK: Expected a string or bytes value",
        ),
        (
            {"kty": "oct", "alg": "HS999", "k": "c2VjcmV0LWtleS1ieXRlcw"},
            "has no key the gateway can use: key 0 is not a usable JWK: its alg 'HS999' is no "
            "algorithm PyJWT knows",
        ),
        (
            {"kid": "k3", "d": "c2VjcmV0LWtleS1ieXRlcw", "n": "AQAB"},
            "has no key the gateway can use: key 0 (kid 'k3') is not a usable JWK: kty is not "
            "found",
        ),
        (  # it was a TypeError traceback (unhashable type: 'list')
            {"kid": "k4", "kty": "RSA", "alg": ["RS256"], "n": "c2VjcmV0", "e": "AQAB"},
            "has no key the gateway can use: key 0 (kid 'k4') is not a usable JWK: a member is "
            "of the wrong JSON type",
        ),
        (  # it was taken, and every token of its key refused at request time
            {"kid": "k5", "kty": "oct", "alg": "HS256", "k": "c2VjcmV0LWtleS1ieXRlcw"},
            "holds a shared secret (a key of kty 'oct'): a JWKS file gives the gateway public "
            "keys only; for HS256 tokens set PIPELINE_GATEWAY__JWT__SECRET instead",
        ),
        (  # it was a NotImplementedError traceback from PyJWT
            {"kid": "k6", "kty": "oct", "alg": "none", "k": "c2VjcmV0LWtleS1ieXRlcw"},
            "has no key the gateway can use: key 0 (kid 'k6') is not a usable JWK: its alg "
            "'none' signs nothing",
        ),
    ],
    ids=["bad-modulus", "unknown-alg", "no-kty", "alg-not-text", "shared-secret", "alg-none"],
)
def test_a_jwks_of_unusable_keys_says_which_and_why_never_quoting_them(
    tmp_path: Path, key: dict[str, Any], said: str
):
    # It said PyJWT's "did not contain any usable keys. Perhaps 'cryptography' is not
    # installed?", cryptography installed.
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [key]}))
    settings = JwtSettings(issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256"], jwks_file=path)

    with pytest.raises(PipelineError) as refused:
        load_token_verifier(settings)

    message = str(refused.value)
    assert message == f"{path} {said}"
    assert "cryptography" not in message
    assert "c2VjcmV0" not in message  # a secret's k, a private key's d
