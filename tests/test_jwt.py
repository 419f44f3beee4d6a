"""JwtVerifier: real keys (RSA 2048, EC P-256, HS256), tokens signed with PyJWT, a JWKS served by a
real HTTP server on 127.0.0.1 (trio + h11, plain or TLS), key files on disk."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import os
import secrets
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import h11
import jwt
import pytest
import trio
import trio.lowlevel
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from gateway.auth import AuthFailure, Identity
from gateway.auth.jwt import MAX_JWKS, MAX_TRIES, REFETCH_INTERVAL, JwtVerifier
from gateway.config import Auth, ConfigError, Jwt, SecretError, parse_config

from .helpers import free_port

ISS = "https://idp.example.com"
AUD = "https://mcp.example.com"
DROP = object()  # a claim value that removes the claim
NO_KEY: Any = None  # what alg "none" is signed with


# -- keys and tokens -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    rsa: RSAPrivateKey
    rsa2: RSAPrivateKey  # the rotated-in key
    other: RSAPrivateKey  # nobody's key: the attacker's
    ec: EllipticCurvePrivateKey
    weak: RSAPrivateKey  # 1024 bits
    hs: str  # a 64-character shared secret

    def pem(self, key: RSAPrivateKey | EllipticCurvePrivateKey) -> bytes:
        return key.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(rsa=rsa.generate_private_key(65537, 2048), rsa2=rsa.generate_private_key(65537, 2048),
                other=rsa.generate_private_key(65537, 2048), ec=ec.generate_private_key(ec.SECP256R1()),
                weak=rsa.generate_private_key(65537, 1024), hs=secrets.token_hex(32))


def jwk(key: Any, kid: str | None, **extra: Any) -> dict[str, Any]:
    public = key.public_key()
    algorithm = RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm
    out: dict[str, Any] = algorithm.to_jwk(public, as_dict=True)
    if kid is not None:
        out["kid"] = kid
    return {**out, "use": "sig", **extra}


def claims(**changes: Any) -> dict[str, Any]:
    now = time.time()
    payload: dict[str, Any] = {"iss": ISS, "aud": AUD, "sub": "alice", "exp": int(now) + 600, "iat": int(now)}
    payload.update(changes)
    return {k: v for k, v in payload.items() if v is not DROP}


def sign(key: Any, alg: str = "RS256", kid: str | None = "rsa1", headers: dict[str, Any] | None = None,
         **changes: Any) -> str:
    return jwt.encode(claims(**changes), key, algorithm=alg, headers={**({"kid": kid} if kid else {}),
                                                                       **(headers or {})})


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hand_made(header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes, secret: bytes | None = None,
              signature: bytes = b"sig") -> str:
    """A token put together by hand (an attacker's): HMAC-SHA256 with ``secret`` when given."""
    h = b64(header if isinstance(header, bytes) else json.dumps(header))
    p = b64(payload if isinstance(payload, bytes) else json.dumps(payload))
    if secret is not None:
        signature = hmac.new(secret, f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64(signature)}"


def flip(token: str, part: int) -> str:
    """The token with one character changed in the middle of part ``part`` (0 header ... 2 signature)."""
    pieces = token.split(".")
    s = pieces[part]
    i = len(s) // 2
    pieces[part] = s[:i] + ("A" if s[i] != "A" else "B") + s[i + 1:]
    return ".".join(pieces)


def config(**kw: Any) -> Jwt:
    return Jwt(issuer=ISS, **kw)


async def refused(verifier: JwtVerifier, token: str) -> AuthFailure:
    with pytest.raises(AuthFailure) as info:
        await verifier.verify(token)
    return info.value


def write_jwks(path: Path, *entries: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"keys": list(entries)}))
    return path


# -- a JWKS server on 127.0.0.1 -------------------------------------------------------------------

JSON = [(b"content-type", b"application/json")]
Route = tuple[int, list[tuple[bytes, bytes]], bytes]


@dataclass
class Jwks:
    """What the server answers, per path, and how often each path was asked for."""

    port: int = 0
    scheme: str = "http"
    routes: dict[str, Route] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/jwks.json"

    def publish(self, *entries: dict[str, Any], path: str = "/jwks.json") -> None:
        self.routes[path] = (200, JSON, json.dumps({"keys": list(entries)}).encode())


@asynccontextmanager
async def jwks_server(tls: ssl.SSLContext | None = None) -> AsyncIterator[Jwks]:
    server = Jwks(scheme="https" if tls else "http")

    async def serve(tcp: trio.SocketStream) -> None:
        stream: trio.abc.Stream = trio.SSLStream(tcp, tls, server_side=True) if tls else tcp
        conn = h11.Connection(h11.SERVER)
        path = ""
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(bytes(data))
                elif isinstance(event, h11.Request):
                    path = event.target.decode()
                    server.hits[path] += 1
                elif isinstance(event, h11.EndOfMessage):
                    status, headers, body = server.routes.get(path, (404, [], b"not found"))
                    chunked = (b"transfer-encoding", b"chunked") in headers
                    length = [] if chunked else [(b"content-length", str(len(body)).encode())]
                    await stream.send_all(conn.send(h11.Response(status_code=status, headers=[
                        *headers, *length, (b"connection", b"close")])) or b"")
                    for i in range(0, len(body), 65536):
                        await stream.send_all(conn.send(h11.Data(data=body[i:i + 65536])) or b"")
                    await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
                    return
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            return  # the verifier hung up (a body over the cap, a certificate it refused)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def running(verifier: JwtVerifier) -> AsyncIterator[JwtVerifier]:
    async with trio.open_nursery() as nursery:
        await nursery.start(verifier.run)
        yield verifier
        nursery.cancel_scope.cancel()


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for background work that needs real I/O while a MockClock stands still."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await trio.lowlevel.checkpoint()


# -- good tokens -----------------------------------------------------------------------------------


async def test_rs256_and_es256_from_a_jwks_url(keys: Keys) -> None:
    async with jwks_server() as idp:
        idp.publish(jwk(keys.rsa, "rsa1"), jwk(keys.ec, "ec1"))
        async with running(JwtVerifier(config(jwks_url=idp.url), audience=AUD)) as verifier:
            exp = int(time.time()) + 600
            rs = sign(keys.rsa, groups=["eng", "ops"], scope="mcp:tools mcp:read", exp=exp)
            identity = await verifier.verify(rs)
            assert identity == Identity("alice", "jwt", groups=frozenset({"eng", "ops"}),
                                        scopes=frozenset({"mcp:tools", "mcp:read"}), expires=float(exp))
            es = sign(keys.ec, "ES256", "ec1", sub="bob", scp=["a", "b"], groups="not-a-list")
            identity = await verifier.verify(es)
            assert (identity.name, identity.scopes, identity.groups) == ("bob", frozenset({"a", "b"}), frozenset())
            assert (await verifier.verify(sign(keys.ec, "ES256", "ec1", scp="x y"))).scopes == {"x", "y"}
            stats = verifier.statistics()
            assert (stats.verified, stats.jwks_fetches, stats.jwks_fetch_failures, stats.keys) == (3, 1, 0, 2)
            assert idp.hits["/jwks.json"] == 1


@pytest.mark.parametrize("aud", [AUD, AUD + "/", [AUD, "https://other.example.com"]])
async def test_the_audience_may_be_a_list_and_have_a_trailing_slash(keys: Keys, tmp_path: Path, aud: Any) -> None:
    verifier = JwtVerifier(config(jwks_file=str(write_jwks(tmp_path / "k.json", jwk(keys.rsa, "rsa1")))),
                           audience=AUD)
    assert (await verifier.verify(sign(keys.rsa, aud=aud))).name == "alice"


async def test_a_pem_key_a_certificate_and_a_jwks_file(keys: Keys, tmp_path: Path) -> None:
    (tmp_path / "rsa.pem").write_bytes(keys.pem(keys.rsa))
    (tmp_path / "ec.pem").write_bytes(keys.pem(keys.ec))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(keys.rsa.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(keys.rsa, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_jwks(tmp_path / "jwks.json", jwk(keys.rsa, "rsa1"), jwk(keys.ec, "ec1"))
    for source, key, alg in [("rsa.pem", keys.rsa, "RS256"), ("ec.pem", keys.ec, "ES256"),
                             ("cert.pem", keys.rsa, "RS256")]:
        verifier = JwtVerifier(config(public_key_file=str(tmp_path / source)), audience=AUD)
        assert (await verifier.verify(sign(key, alg, kid=None))).name == "alice"
        assert (await refused(verifier, sign(keys.other, kid=None))).reason == "bad_signature"
    verifier = JwtVerifier(config(jwks_file=str(tmp_path / "jwks.json")), audience=AUD)
    assert (await verifier.verify(sign(keys.rsa))).name == "alice"
    assert (await verifier.verify(sign(keys.ec, "ES256", "ec1"))).name == "alice"
    # A token without kid is tried against the keys of its algorithm.
    assert (await verifier.verify(sign(keys.ec, "ES256", kid=None))).name == "alice"


async def test_a_shared_secret(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JWT_TEST_SECRET", keys.hs)
    verifier = JwtVerifier(config(secret="env:JWT_TEST_SECRET", algorithms=["HS256"]), audience=AUD)
    assert (await verifier.verify(sign(keys.hs, "HS256", kid=None))).name == "alice"
    assert (await refused(verifier, sign("x" * 64, "HS256", kid=None))).reason == "bad_signature"


async def test_a_parsed_config_makes_a_verifier(keys: Keys, tmp_path: Path) -> None:
    path = write_jwks(tmp_path / "k.json", jwk(keys.rsa, "rsa1"))
    cfg = parse_config({"servers": {"t": {"command": "true"}}, "auth": {
        "resource": AUD, "jwt": {"issuer": ISS, "jwks_file": str(path), "leeway": "5s"}}})
    assert isinstance(cfg.auth, Auth) and cfg.auth.jwt is not None and cfg.auth.resource is not None
    verifier = JwtVerifier(cfg.auth.jwt, audience=cfg.auth.jwt.audience or cfg.auth.resource)
    assert (await verifier.verify(sign(keys.rsa))).key == "jwt:alice"


# -- every bad token -------------------------------------------------------------------------------

Case = Callable[[Keys], str]
BAD: dict[str, tuple[str, Case]] = {
    "not a JWT": ("malformed", lambda k: "hello"),
    "three parts of nothing": ("malformed", lambda k: "a.b.c"),
    "bad base64": ("malformed", lambda k: "!!!." + sign(k.rsa).split(".", 1)[1]),
    "header not JSON": ("malformed", lambda k: hand_made(b"{nope", claims())),
    "header not an object": ("malformed", lambda k: hand_made(b"[1]", claims())),
    "header nested deep": ("malformed", lambda k: hand_made(b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}",
                                                            claims())),
    "no alg": ("malformed", lambda k: hand_made({"typ": "JWT"}, claims())),
    "kid not a string": ("malformed", lambda k: hand_made({"alg": "RS256", "kid": 7}, claims())),
    "not ASCII": ("malformed", lambda k: sign(k.rsa) + "é"),
    "payload not JSON": ("malformed", lambda k: jwt.api_jws.encode(b"{nope", k.rsa, "RS256",
                                                                   headers={"kid": "rsa1"})),
    "payload not an object": ("malformed", lambda k: jwt.api_jws.encode(b"[1]", k.rsa, "RS256",
                                                                        headers={"kid": "rsa1"})),
    "no sub": ("malformed", lambda k: sign(k.rsa, sub=DROP)),
    "sub not a string": ("malformed", lambda k: sign(k.rsa, sub=42)),
    "no exp": ("malformed", lambda k: sign(k.rsa, exp=DROP)),
    "exp not a number": ("malformed", lambda k: jwt.encode({**claims(), "exp": "soon"}, k.rsa, "RS256",
                                                           headers={"kid": "rsa1"})),
    "unknown critical header": ("malformed", lambda k: sign(k.rsa, headers={"crit": ["exp-ext"], "exp-ext": 1})),
    "tampered payload": ("bad_signature", lambda k: flip(sign(k.rsa), 1)),
    "tampered signature": ("bad_signature", lambda k: flip(sign(k.rsa), 2)),
    "tampered header": ("bad_signature", lambda k: ".".join([b64(json.dumps({"alg": "RS256", "kid": "rsa1",
                                                                               "x": 1})),
                                                             *sign(k.rsa).split(".")[1:]])),
    "signed with another key": ("bad_signature", lambda k: sign(k.other)),
    "another key, embedded in the header": ("bad_signature", lambda k: sign(
        k.other, headers={"jwk": jwk(k.other, "rsa1"), "jku": "http://127.0.0.1:1/evil"})),
    "unknown kid": ("bad_signature", lambda k: sign(k.rsa, kid="nobody")),
    "alg none": ("bad_signature", lambda k: jwt.encode(claims(), NO_KEY, algorithm="none", headers={"kid": "rsa1"})),
    "alg None, by hand": ("bad_signature", lambda k: hand_made({"alg": "None", "kid": "rsa1"}, claims(),
                                                               signature=b"")),
    "alg not configured": ("bad_signature", lambda k: sign(k.rsa, "RS512")),
    "RS key as HS secret": ("bad_signature", lambda k: hand_made({"alg": "HS256", "kid": "rsa1"}, claims(),
                                                                 secret=k.pem(k.rsa))),
    "EC alg naming the RSA key": ("bad_signature", lambda k: sign(k.ec, "ES256", "rsa1")),
    "expired": ("expired", lambda k: sign(k.rsa, exp=int(time.time()) - 100)),
    "not valid before": ("not_yet_valid", lambda k: sign(k.rsa, nbf=int(time.time()) + 100)),
    "issued in the future": ("not_yet_valid", lambda k: sign(k.rsa, iat=int(time.time()) + 100)),
    "another issuer": ("wrong_issuer", lambda k: sign(k.rsa, iss="https://evil.example.com")),
    "no issuer": ("wrong_issuer", lambda k: sign(k.rsa, iss=DROP)),
    "another audience": ("wrong_audience", lambda k: sign(k.rsa, aud="https://other.example.com")),
    "audience a prefix of ours": ("wrong_audience", lambda k: sign(k.rsa, aud="https://mcp.example")),
    "no audience": ("wrong_audience", lambda k: sign(k.rsa, aud=DROP)),
}
PINNED = {"alg none": "none", "alg None, by hand": "None", "alg not configured": "RS512"}


@pytest.mark.parametrize("case", list(BAD))
async def test_bad_tokens_are_refused_with_their_reason(keys: Keys, tmp_path: Path, case: str) -> None:
    reason, make = BAD[case]
    # RS256 and HS256 both configured on a public key: the HS entry must never make the RSA key a secret.
    verifier = JwtVerifier(config(jwks_file=str(write_jwks(tmp_path / "k.json", jwk(keys.rsa, "rsa1"),
                                                           jwk(keys.ec, "ec1"))),
                                  algorithms=["RS256", "ES256", "HS256"], leeway=30),
                           audience=AUD)
    token = make(keys)
    for _ in range(3):  # the same every time (a refusal remembered is the same refusal)
        failure = await refused(verifier, token)
        assert (failure.reason, failure.status, failure.error) == (reason, 401, "invalid_token")
        text = str(failure)
        assert text == failure.message and "Traceback" not in text
        assert token not in text and all(len(p) < 8 or p not in text for p in token.split("."))
    if case in PINNED:  # refused by the configured list itself, before any key is looked at
        assert failure.message == f"tokens signed with {PINNED[case]} are not accepted (this gateway accepts " \
                                  "ES256, HS256, RS256)"
    stats = verifier.statistics()
    assert stats.refused == {reason: 3} and stats.verified == 0
    assert stats.signature_checks <= 1  # a refusal costs at most one signature check, repeats none


async def test_a_forged_kid_flood_costs_no_signature_check(keys: Keys, tmp_path: Path) -> None:
    verifier = JwtVerifier(config(jwks_file=str(write_jwks(tmp_path / "k.json", jwk(keys.rsa, "rsa1")))),
                           audience=AUD)
    for i in range(200):
        assert (await refused(verifier, sign(keys.other, kid=f"k{i}"))).reason == "bad_signature"
    assert verifier.statistics().signature_checks == 0



async def test_a_token_without_kid_is_tried_against_a_few_keys_only(tmp_path: Path) -> None:
    many = [ec.generate_private_key(ec.SECP256R1()) for _ in range(5)]
    path = write_jwks(tmp_path / "k.json", *(jwk(k, f"ec{i}") for i, k in enumerate(many)))
    verifier = JwtVerifier(config(jwks_file=str(path)), audience=AUD)
    assert (await verifier.verify(sign(many[1], "ES256", kid=None))).name == "alice"
    assert verifier.statistics().signature_checks == 2
    assert (await refused(verifier, sign(ec.generate_private_key(ec.SECP256R1()), "ES256", kid=None))).reason \
        == "bad_signature"
    assert verifier.statistics().signature_checks == 2 + MAX_TRIES
    assert (await verifier.verify(sign(many[4], "ES256", kid="ec4"))).name == "alice"  # with its kid: one check
    assert verifier.statistics().signature_checks == 3 + MAX_TRIES


# -- leeway, scopes, the cache ---------------------------------------------------------------------


@pytest.mark.parametrize(("leeway", "passes"), [(30, True), (5, False)])
async def test_leeway(keys: Keys, tmp_path: Path, leeway: float, passes: bool) -> None:
    now = 1_900_000_000.0
    verifier = JwtVerifier(config(jwks_file=str(write_jwks(tmp_path / "k.json", jwk(keys.rsa, "rsa1"))),
                                  leeway=leeway), audience=AUD, clock=lambda: now)
    expired = sign(keys.rsa, exp=int(now) - 10, iat=int(now) - 600)
    early = sign(keys.rsa, nbf=int(now) + 10, iat=int(now), exp=int(now) + 600)
    for token, reason in ((expired, "expired"), (early, "not_yet_valid")):
        if passes:
            assert (await verifier.verify(token)).name == "alice"
        else:
            assert (await refused(verifier, token)).reason == reason


async def test_required_scopes(keys: Keys, tmp_path: Path) -> None:
    verifier = JwtVerifier(config(jwks_file=str(write_jwks(tmp_path / "k.json", jwk(keys.rsa, "rsa1"))),
                                  required_scopes=["mcp:tools", "mcp:read"]), audience=AUD)
    narrow = sign(keys.rsa, scope="mcp:read other")
    for _ in range(2):  # the second from the cache: the scopes are checked every time
        failure = await refused(verifier, narrow)
        assert (failure.reason, failure.status, failure.error, failure.scope) == (
            "insufficient_scope", 403, "insufficient_scope", "mcp:tools mcp:read")
    assert (await verifier.verify(sign(keys.rsa, scope="mcp:read mcp:tools"))).name == "alice"
    assert (await verifier.verify(sign(keys.rsa, scp=["mcp:read", "mcp:tools"]))).name == "alice"
    stats = verifier.statistics()
    assert stats.refused == {"insufficient_scope": 2} and stats.cache_hits == 1


async def test_the_cache_answers_repeats_until_exp_and_at_most_five_minutes(keys: Keys, tmp_path: Path) -> None:
    now = [1_900_000_000.0]
    verifier = JwtVerifier(config(jwks_file=str(write_jwks(tmp_path / "k.json", jwk(keys.rsa, "rsa1"))),
                                  leeway=0), audience=AUD, clock=lambda: now[0])
    long = sign(keys.rsa, exp=int(now[0]) + 3600, iat=int(now[0]))
    short = sign(keys.rsa, exp=int(now[0]) + 60, iat=int(now[0]))
    for _ in range(5):
        await verifier.verify(long)
        await verifier.verify(short)
    stats = verifier.statistics()
    assert (stats.verified, stats.cache_hits, stats.signature_checks, stats.cached) == (2, 8, 2, 2)
    now[0] += 61  # the short token expired: never served from the cache past its exp
    assert (await refused(verifier, short)).reason == "expired"
    await verifier.verify(long)
    assert verifier.statistics().cache_hits == 9
    now[0] += 240  # five minutes after it was verified: verified again
    await verifier.verify(long)
    assert (verifier.statistics().verified, verifier.statistics().signature_checks) == (3, 4)


# -- the JWKS by URL: rotation, a flood, failures --------------------------------------------------


async def test_kid_rotation_and_a_flood_of_unknown_kids(keys: Keys, mock_clock: trio.testing.MockClock) -> None:
    async with jwks_server() as idp:
        idp.publish(jwk(keys.rsa, "rsa1"))
        async with running(JwtVerifier(config(jwks_url=idp.url), audience=AUD)) as verifier:
            assert verifier.statistics().jwks_fetches == 1
            mock_clock.jump(REFETCH_INTERVAL + 1)
            idp.publish(jwk(keys.rsa, "rsa1"), jwk(keys.rsa2, "rsa2"))  # the IdP rotates a key in
            assert (await verifier.verify(sign(keys.rsa2, kid="rsa2"))).name == "alice"
            assert (verifier.statistics().jwks_fetches, idp.hits["/jwks.json"]) == (2, 2)

            reasons: Counter[str] = Counter()

            async def forged(i: int) -> None:
                reasons[(await refused(verifier, sign(keys.other, kid=f"forged-{i}"))).reason] += 1

            async def flood(n: int) -> None:
                async with trio.open_nursery() as nursery:
                    for i in range(n):
                        nursery.start_soon(forged, i)

            await flood(50)  # just after a fetch: none
            assert idp.hits["/jwks.json"] == 2
            for _ in range(3):
                mock_clock.jump(REFETCH_INTERVAL)
                await flood(50)  # 50 at once share one fetch
                for i in range(20):  # and the next ones wait for the interval
                    await forged(i)
            assert reasons == {"bad_signature": 50 + 3 * 70}
            assert idp.hits["/jwks.json"] == verifier.statistics().jwks_fetches == 5
            assert verifier.statistics().signature_checks == 1  # the rotated key's token only


async def test_a_key_removed_at_the_idp_stops_working(keys: Keys, mock_clock: trio.testing.MockClock) -> None:
    async with jwks_server() as idp:
        idp.publish(jwk(keys.rsa, "rsa1"), jwk(keys.rsa2, "rsa2"))
        async with running(JwtVerifier(config(jwks_url=idp.url, jwks_cache=120), audience=AUD)) as verifier:
            token = sign(keys.rsa, kid="rsa1")
            await verifier.verify(token)
            await verifier.verify(token)
            assert verifier.statistics().cache_hits == 1
            idp.publish(jwk(keys.rsa2, "rsa2"))  # rsa1 revoked
            mock_clock.jump(120)  # the background refresh
            await until(lambda: verifier.statistics().keys == 1)
            assert verifier.statistics().cached == 0
            assert (await refused(verifier, token)).reason == "bad_signature"
            assert (await verifier.verify(sign(keys.rsa2, kid="rsa2"))).name == "alice"


async def test_the_background_refresh_counts_from_the_last_fetch(keys: Keys,
                                                                 mock_clock: trio.testing.MockClock) -> None:
    async with jwks_server() as idp:
        idp.publish(jwk(keys.rsa, "rsa1"))
        async with running(JwtVerifier(config(jwks_url=idp.url, jwks_cache=100), audience=AUD)) as verifier:
            mock_clock.jump(40)
            await refused(verifier, sign(keys.other, kid="new"))  # an unknown kid: a fetch at t=40
            assert idp.hits["/jwks.json"] == 2
            mock_clock.jump(60)  # t=100: 60 s after the last fetch, none due
            await trio.testing.wait_all_tasks_blocked()
            assert verifier.statistics().jwks_fetches == 2
            mock_clock.jump(40)  # t=140
            await until(lambda: idp.hits["/jwks.json"] == 3)
            mock_clock.jump(100)
            await until(lambda: idp.hits["/jwks.json"] == 4)


async def test_alg_none_is_refused_even_when_configured_by_code(keys: Keys, tmp_path: Path) -> None:
    path = write_jwks(tmp_path / "k.json", jwk(keys.rsa, "rsa1"))
    verifier = JwtVerifier(config(jwks_file=str(path), algorithms=["none", "RS256"]), audience=AUD)
    token = jwt.encode(claims(), NO_KEY, algorithm="none", headers={"kid": "rsa1"})
    assert (await refused(verifier, token)).reason == "bad_signature"
    assert verifier.statistics().signature_checks == 0


async def test_an_unreachable_jwks_at_start_is_not_fatal(keys: Keys, mock_clock: trio.testing.MockClock,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    verifier = JwtVerifier(config(jwks_url=f"http://127.0.0.1:{port}/jwks.json?key=SECRET"), audience=AUD)
    async with running(verifier):
        stats = verifier.statistics()
        assert (stats.jwks_fetches, stats.jwks_fetch_failures, stats.keys) == (1, 1, 0)
        failure = await refused(verifier, sign(keys.rsa))
        assert (failure.reason, failure.status) == ("unavailable", 503)
        assert verifier.statistics().jwks_fetches == 1  # no fetch per request while the IdP is down
    assert "auth.jwt.jwks_url" in caplog.text and "SECRET" not in caplog.text


async def test_a_jwks_that_comes_back(keys: Keys, mock_clock: trio.testing.MockClock) -> None:
    async with jwks_server() as idp:
        idp.routes["/jwks.json"] = (503, [], b"down")
        async with running(JwtVerifier(config(jwks_url=idp.url), audience=AUD)) as verifier:
            assert (await refused(verifier, sign(keys.rsa))).reason == "unavailable"
            idp.publish(jwk(keys.rsa, "rsa1"))
            mock_clock.jump(1)  # the background retry comes soon after a failure
            await until(lambda: verifier.statistics().keys == 1)
            assert (await verifier.verify(sign(keys.rsa))).name == "alice"


def _large() -> bytes:
    return json.dumps({"keys": [], "padding": "x" * MAX_JWKS}).encode()


FAILING: dict[str, Callable[[Keys], Route]] = {
    "HTTP 500": lambda k: (500, JSON, b"{}"),
    "a redirect": lambda k: (302, [(b"location", b"/moved.json")], b""),
    "over 1 MiB": lambda k: (200, JSON, _large()),
    "over 1 MiB, chunked": lambda k: (200, [*JSON, (b"transfer-encoding", b"chunked")], _large()),
    "not JSON": lambda k: (200, JSON, b"<html>"),
    "not a JWKS": lambda k: (200, JSON, b'{"keys": {}}'),
    "no usable key": lambda k: (200, JSON, json.dumps({"keys": [
        {"kty": "oct", "k": b64(b"s" * 32), "kid": "hs"}, {**jwk(k.rsa2, "enc"), "use": "enc"},
        jwk(k.weak, "weak"), {"kty": "RSA", "kid": "junk", "n": "AQAB", "e": "!"}]}).encode()),
}


@pytest.mark.parametrize("case", list(FAILING))
async def test_a_failed_refetch_keeps_the_old_keys(keys: Keys, mock_clock: trio.testing.MockClock,
                                                   case: str) -> None:
    async with jwks_server() as idp:
        idp.publish(jwk(keys.rsa, "rsa1"))
        idp.publish(jwk(keys.rsa2, "rsa2"), path="/moved.json")
        async with running(JwtVerifier(config(jwks_url=idp.url), audience=AUD)) as verifier:
            idp.routes["/jwks.json"] = FAILING[case](keys)
            mock_clock.jump(REFETCH_INTERVAL + 1)
            assert (await refused(verifier, sign(keys.rsa2, kid="rsa2"))).reason == "bad_signature"
            stats = verifier.statistics()
            assert (stats.jwks_fetches, stats.jwks_fetch_failures, stats.keys) == (2, 1, 1)
            assert idp.hits["/moved.json"] == 0  # redirects are not followed
            assert (await verifier.verify(sign(keys.rsa))).name == "alice"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    directory = tmp_path_factory.mktemp("tls")
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return directory / "cert.pem", directory / "key.pem"


async def test_tls_is_verified(keys: Keys, tls_files: tuple[Path, Path]) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_files)
    async with jwks_server(tls=context) as idp:
        idp.publish(jwk(keys.rsa, "rsa1"))
        async with running(JwtVerifier(config(jwks_url=idp.url), audience=AUD)) as verifier:
            # A self-signed certificate is not trusted: nothing fetched, nothing accepted.
            assert verifier.statistics().jwks_fetch_failures == 1
            assert (await refused(verifier, sign(keys.rsa))).reason == "unavailable"


# -- key files -------------------------------------------------------------------------------------


async def test_a_jwks_file_is_re_read_when_it_changes(keys: Keys, tmp_path: Path,
                                                      mock_clock: trio.testing.MockClock) -> None:
    path = write_jwks(tmp_path / "k.json", jwk(keys.rsa, "rsa1"))
    verifier = JwtVerifier(config(jwks_file=str(path)), audience=AUD)
    old = sign(keys.rsa, kid="rsa1")
    await verifier.verify(old)
    write_jwks(path, jwk(keys.rsa2, "rsa2"))
    os.utime(path, (time.time() + 10, time.time() + 10))
    assert (await verifier.verify(old)).name == "alice"  # looked at no more than once a second
    mock_clock.jump(1.5)
    assert (await verifier.verify(sign(keys.rsa2, kid="rsa2"))).name == "alice"
    assert (await refused(verifier, old)).reason == "bad_signature"
    path.write_text("{broken")
    os.utime(path, (time.time() + 20, time.time() + 20))
    mock_clock.jump(1.5)
    assert (await verifier.verify(sign(keys.rsa2, kid="rsa2"))).name == "alice"  # the old keys stay
    stats = verifier.statistics()
    assert (stats.jwks_fetches, stats.jwks_fetch_failures, stats.keys) == (3, 1, 1)


@pytest.fixture
def files(keys: Keys, tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "ec.json").write_text(json.dumps({"keys": [jwk(keys.ec, "ec1")]}))
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "text.pem").write_text("hello")
    (tmp_path / "weak.pem").write_bytes(keys.pem(keys.weak))
    (tmp_path / "ec.pem").write_bytes(keys.pem(keys.ec))
    yield tmp_path


@pytest.mark.parametrize(("key", "name", "words"), [
    ("jwks_file", "missing.json", "cannot read"),
    ("jwks_file", "broken.json", "not a JSON document"),
    ("jwks_file", "list.json", "not a JWKS document"),
    ("jwks_file", "ec.json", "no key in it verifies RS256"),
    ("public_key_file", "missing.pem", "cannot read"),
    ("public_key_file", "text.pem", "not a PEM public key"),
    ("public_key_file", "weak.pem", "2048"),
    ("public_key_file", "ec.pem", "verifies none of RS256"),
])
def test_key_file_errors_name_the_key(files: Path, key: str, name: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        JwtVerifier(config(**{key: str(files / name)}, algorithms=["RS256"]), audience=AUD)
    assert info.value.path == f"auth.jwt.{key}"
    assert str(info.value).startswith(f"auth.jwt.{key}: ") and words in str(info.value)


def test_secret_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JWT_TEST_UNSET", raising=False)
    with pytest.raises(SecretError) as unset:
        JwtVerifier(config(secret="env:JWT_TEST_UNSET", algorithms=["HS256"]), audience=AUD)
    assert unset.value.path == "auth.jwt.secret"
    monkeypatch.setenv("JWT_TEST_SHORT", "tooshort-but-secret")
    with pytest.raises(ConfigError) as info:
        JwtVerifier(config(secret="env:JWT_TEST_SHORT", algorithms=["HS256"]), audience=AUD)
    assert info.value.path == "auth.jwt.secret" and "32" in str(info.value)
    assert "tooshort" not in str(info.value)
    monkeypatch.setenv("JWT_TEST_SHORT", "x" * 40)
    with pytest.raises(ConfigError, match="HS512 needs at least 64"):
        JwtVerifier(config(secret="env:JWT_TEST_SHORT", algorithms=["HS256", "HS512"]), audience=AUD)
