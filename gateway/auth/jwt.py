"""JWT bearer tokens: signature, issuer, audience, lifetime and scopes, checked with PyJWT.

:class:`JwtVerifier` turns a token into an :class:`~gateway.auth.Identity` or refuses it with an
:class:`~gateway.auth.AuthFailure` whose reason says why (a bounded metric label) and whose message
is safe to show the client (it never holds the token).

Keys come from exactly one place (``auth.jwt``): a JWKS document by URL (``jwks_url``: fetched with
httpx2, TLS verified, no redirects, at most 1 MiB, cached ``jwks_cache`` seconds, refreshed by
:meth:`JwtVerifier.run`), a JWKS file (``jwks_file``), a PEM public key or certificate
(``public_key_file``), or a shared secret (``secret``, HS256/384/512). Files are re-read when their
modification time changes (looked at no more than once a second).

What cannot be talked around, whatever the token's header says:

- the algorithm is one of ``auth.jwt.algorithms``, never ``none``, and each key verifies only the
  algorithms of its own type (an RSA key never becomes an HMAC secret: the RS/HS confusion);
- a key is picked by ``kid`` from the configured keys only (``jku``, ``x5u``, ``jwk`` are ignored);
- ``exp`` is required; ``exp``, ``nbf`` and ``iat`` are checked against the injected clock with
  ``leeway``; the issuer must be ``issuer``; the audience must name this gateway.

Cost: a token verified once is kept (by its SHA-256) until it expires, at most five minutes, so a
repeat costs a hash and a lookup; the cache is emptied whenever the key set changes, so a key the
identity provider removed stops working at the next fetch. A refused token costs one signature
check (a token without ``kid`` is tried against the keys of its algorithm, at most three), about
what a new good token costs, and a repeat of it nothing more for a minute. An unknown ``kid``
causes at most one JWKS fetch per 30 seconds, shared by every request waiting for it, so a flood
of made-up key ids cannot make the gateway hammer the identity provider.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import ssl
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeGuard
from urllib.parse import urlsplit

import httpx2
import jwt as pyjwt
import msgspec
import trio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from ..config import ConfigError, Jwt, resolve_secret
from . import AuthFailure, Identity

log = logging.getLogger("mcp_gateway.auth")

MAX_JWKS: Final = 1024 * 1024  # bytes of a JWKS document (a real one is a few KB)
MAX_KEYS: Final = 100  # keys taken from one JWKS document
FETCH_TIMEOUT: Final = 10.0  # seconds for one JWKS fetch, connecting included
REFETCH_INTERVAL: Final = 30.0  # at most one request-driven JWKS fetch this often
CACHE_SIZE: Final = 10_000  # verified tokens kept
CACHE_TTL: Final = 300.0  # a verified token is re-verified after this long, whatever its exp
REFUSED_SIZE: Final = 10_000  # refused tokens kept (those that cost a signature check)
REFUSED_TTL: Final = 60.0
MAX_TRIES: Final = 3  # keys one token is checked against (a token without kid, a JWKS with several)
FILE_CHECK_INTERVAL: Final = 1.0  # seconds between looks at a key file's modification time
_RETRY_MAX: Final = 30.0  # the background fetch retries a failure after 1, 2, 4 ... at most this many s

_RSA: Final = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC: Final = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_HMAC: Final = {"HS256": 32, "HS384": 48, "HS512": 64}  # RFC 7518 3.2: a key at least the hash's size
_MIN_RSA_BITS: Final = 2048
_MAX_RSA_BITS: Final = 16384  # OpenSSL's own limit for verifying
_SHOWN_ALG: Final = re.compile(r"[A-Za-z0-9+_-]{1,16}")
_LOADERS: Final[dict[str, Any]] = {"RSA": RSAAlgorithm, "EC": ECAlgorithm, "OKP": OKPAlgorithm}
_MAX_TOKEN: Final = 64 * 1024  # the HTTP edge caps it lower; this holds for callers that do not

# exp/nbf/iat are checked here against the injected clock (PyJWT reads the system clock); the
# signature, iss, aud and the types of sub and jti by PyJWT.
_decoder: Final = pyjwt.PyJWT({"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                               "require": ["exp"], "enforce_minimum_key_length": True})
_jwks_decoder: Final = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class JwtStatistics:
    """What the verifier has done since it was made."""

    verified: int  # tokens whose signature and claims passed (cache misses)
    cache_hits: int  # tokens answered from the verified-token cache
    signature_checks: int  # signature verifications run (what a refused token can cost)
    refused: dict[str, int]  # refusals by AuthFailure.reason (insufficient_scope included)
    jwks_fetches: int  # JWKS fetch attempts (URL) or key file loads
    jwks_fetch_failures: int
    keys: int  # usable keys held now
    cached: int  # tokens in the verified-token cache


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str | None
    algorithms: frozenset[str]  # what this key may verify: its type's, within the configured list
    key: Any  # a cryptography public key, or bytes (a shared secret)


class _FetchError(Exception):
    """A JWKS that could not be fetched or used; the message names no secret."""


class JwtVerifier:
    """Verifies JWT bearer tokens for one audience (this gateway) against ``auth.jwt``.

    File and secret sources are read here: a problem is a :class:`~gateway.config.ConfigError`
    naming the key (``auth.jwt.jwks_file: ...``). A ``jwks_url`` is fetched by :meth:`run` (or
    the first :meth:`verify` that needs it).
    """

    def __init__(self, config: Jwt, *, audience: str, clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock
        # The config's type has no "none"; a Jwt built by code is held to that too.
        self._algorithms = frozenset(a for a in config.algorithms if a.lower() != "none")
        self._issuer = config.issuer
        self._audience = audience
        # A resource URI with and without its trailing slash is one resource (the SDK compares so).
        self._audiences = sorted({audience, audience.rstrip("/") or audience, audience.rstrip("/") + "/"})
        self._leeway = float(config.leeway)
        self._required = tuple(config.required_scopes)
        self._keys: list[_Key] = []
        self._good: OrderedDict[bytes, tuple[Identity, float]] = OrderedDict()
        self._bad: OrderedDict[bytes, tuple[str, str, float]] = OrderedDict()
        self._lock = trio.Lock()  # one fetch or file load at a time
        self._last_attempt = -math.inf  # trio time of the last JWKS fetch attempt
        self._fetched_ok = False
        self._ssl: ssl.SSLContext | None = None
        self._file: tuple[str, str] | None = None  # (path, config key) of a watched key file
        self._file_stamp: tuple[int, int, int] | None = None
        self._file_checked = -math.inf
        self._verified = self._hits = self._checks = self._fetches = self._failures = 0
        self._refused: Counter[str] = Counter()
        if config.secret is not None:
            self._keys = [_secret_key(config.secret, self._algorithms)]
        elif config.jwks_file is not None:
            self._file = (config.jwks_file, "auth.jwt.jwks_file")
        elif config.public_key_file is not None:
            self._file = (config.public_key_file, "auth.jwt.public_key_file")
        elif config.jwks_url is None:
            raise ConfigError("set exactly one of jwks_url, jwks_file, public_key_file or secret", path="auth.jwt")
        if self._file is not None:
            path, where = self._file
            stamp = _stamp(path)
            try:
                self._keys = self._read_file()
            except _FetchError as e:
                raise ConfigError(f"{path}: {e}", path=where) from None
            self._file_stamp = stamp
            self._fetches += 1

    # -- the public face ---------------------------------------------------------------------------

    async def verify(self, token: str) -> Identity:
        """The token's caller, or :class:`AuthFailure` (401; 403 ``insufficient_scope``;
        503 ``unavailable`` when the JWKS cannot be fetched and no key is held)."""
        try:
            identity = await self._identity(token)
            missing = [s for s in self._required if s not in identity.scopes]
            if missing:
                raise AuthFailure("insufficient_scope", f"this gateway needs the scopes: {' '.join(self._required)}",
                                  status=403, error="insufficient_scope", scope=" ".join(self._required))
        except AuthFailure as failure:
            self._refused[failure.reason] += 1
            raise
        return identity

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fetch the JWKS (a failure is logged, not fatal), then keep it fresh until cancelled."""
        if self._config.jwks_url is None:
            task_status.started()
            await trio.sleep_forever()
        await self._refresh(throttled=False)
        task_status.started()
        cache = float(self._config.jwks_cache)
        backoff = 1.0
        while True:
            if self._fetched_ok:
                delay, backoff = cache, 1.0
            else:  # the keys held (if any) stay in use; try again soon, then less often
                delay = min(backoff, cache)
            # Counted from the last fetch, whoever made it (an unknown kid may have made one since).
            await trio.sleep_until(self._last_attempt + delay)
            if trio.current_time() >= self._last_attempt + delay:
                if not self._fetched_ok:
                    backoff = min(backoff * 2, _RETRY_MAX)
                await self._refresh(throttled=False)

    def statistics(self) -> JwtStatistics:
        return JwtStatistics(verified=self._verified, cache_hits=self._hits, signature_checks=self._checks,
                             refused=dict(self._refused), jwks_fetches=self._fetches,
                             jwks_fetch_failures=self._failures, keys=len(self._keys), cached=len(self._good))

    # -- one token ---------------------------------------------------------------------------------

    async def _identity(self, token: str) -> Identity:
        try:
            raw = token.encode("ascii")
        except UnicodeEncodeError:
            raise _malformed() from None
        if len(raw) > _MAX_TOKEN:
            raise _malformed()
        if self._file is not None:
            await self._check_file()  # before the cache: a key taken out of the file empties it
        digest = hashlib.sha256(raw).digest()
        now = self._clock()
        hit = self._good.get(digest)
        if hit is not None:
            if now < hit[1]:
                self._good.move_to_end(digest)
                self._hits += 1
                return hit[0]
            del self._good[digest]
        bad = self._bad.get(digest)
        if bad is not None:
            if now < bad[2]:
                raise AuthFailure(bad[0], bad[1])
            del self._bad[digest]

        try:
            header = pyjwt.get_unverified_header(raw)
        except pyjwt.PyJWTError:
            raise _malformed() from None
        alg = header.get("alg")
        kid = header.get("kid")
        if not isinstance(alg, str) or (kid is not None and not isinstance(kid, str)):
            raise _malformed()
        if alg not in self._algorithms:  # "none" is never in the configured list
            shown = alg if _SHOWN_ALG.fullmatch(alg) else "an unknown algorithm"
            raise AuthFailure("bad_signature", f"tokens signed with {shown} are not accepted "
                                               f"(this gateway accepts {', '.join(sorted(self._algorithms))})")
        keys = await self._keys_for(alg, kid)

        try:
            payload = self._decode(raw, alg, keys)
        except AuthFailure as failure:
            self._remember_refusal(digest, failure, now + REFUSED_TTL)
            raise
        try:
            identity = self._check_claims(payload, now)
        except AuthFailure as failure:
            until = now + REFUSED_TTL
            if failure.reason == "not_yet_valid":  # remembered only until it becomes valid
                until = min(until, _starts(payload) - self._leeway)
            self._remember_refusal(digest, failure, until)
            raise
        self._verified += 1
        until = min(now + CACHE_TTL, (identity.expires or now) + self._leeway)
        self._good[digest] = (identity, until)
        if len(self._good) > CACHE_SIZE:
            self._good.popitem(last=False)
        return identity

    def _decode(self, raw: bytes, alg: str, keys: list[_Key]) -> dict[str, Any]:
        for i, key in enumerate(keys):
            self._checks += 1
            try:
                payload: dict[str, Any] = _decoder.decode(raw, key.key, algorithms=[alg], audience=self._audiences,
                                                          issuer=self._issuer)
                return payload
            except pyjwt.InvalidSignatureError:
                if i + 1 < len(keys):
                    continue  # a token without kid: the next key of its algorithm may have signed it
                raise AuthFailure("bad_signature", "the token's signature does not verify") from None
            except pyjwt.InvalidAudienceError:
                raise self._wrong_audience() from None
            except pyjwt.InvalidIssuerError:
                raise self._wrong_issuer() from None
            except pyjwt.MissingRequiredClaimError as e:
                if e.claim == "aud":
                    raise self._wrong_audience() from None
                if e.claim == "iss":
                    raise self._wrong_issuer() from None
                raise AuthFailure("malformed", f"the token has no {e.claim!r} claim") from None
            except (pyjwt.InvalidAlgorithmError, pyjwt.InvalidKeyError):
                raise AuthFailure("bad_signature", "the token's signature does not verify") from None
            except (pyjwt.PyJWTError, ValueError, TypeError):
                # DecodeError (base64, JSON, a payload that is not an object), bad sub/jti types, and
                # whatever a hostile encoding makes a decoder raise: never a stack trace.
                raise _malformed() from None
        raise AuthFailure("bad_signature", "no key of the identity provider verifies this token")

    def _check_claims(self, payload: dict[str, Any], now: float) -> Identity:
        exp = payload.get("exp")
        nbf = payload.get("nbf")
        iat = payload.get("iat")
        for name, value in (("exp", exp), ("nbf", nbf), ("iat", iat)):
            if value is not None and not _is_time(value):
                raise AuthFailure("malformed", f"the token's {name!r} claim is not a number")
        assert isinstance(exp, int | float)  # required by the decoder, and a number (just checked)
        if exp + self._leeway <= now:
            raise AuthFailure("expired", "the token has expired")
        if (nbf is not None and nbf - self._leeway > now) or (iat is not None and iat - self._leeway > now):
            raise AuthFailure("not_yet_valid", "the token is not valid yet")
        claim = self._config.subject_claim
        subject = payload.get(claim)
        if not isinstance(subject, str) or not subject:
            raise AuthFailure("malformed", f"the token has no {claim!r} claim (a string)")
        groups = payload.get(self._config.groups_claim)
        return Identity(subject, "jwt", groups=_strings(groups), scopes=_scopes(payload), expires=float(exp))

    def _wrong_audience(self) -> AuthFailure:
        return AuthFailure("wrong_audience", f"the token was not issued for this gateway "
                                             f"(its audience must be {self._audience})")

    def _wrong_issuer(self) -> AuthFailure:
        return AuthFailure("wrong_issuer", f"the token was not issued by {self._issuer}")

    def _remember_refusal(self, digest: bytes, failure: AuthFailure, until: float) -> None:
        self._bad[digest] = (failure.reason, failure.message, until)
        if len(self._bad) > REFUSED_SIZE:
            self._bad.popitem(last=False)

    # -- keys --------------------------------------------------------------------------------------

    def _matching(self, alg: str, kid: str | None) -> list[_Key]:
        """The keys that may have signed a token: its kid's (or, without one, its algorithm's),
        at most :data:`MAX_TRIES` (what one token can cost in signature checks)."""
        found = [k for k in self._keys if alg in k.algorithms and (kid is None or k.kid is None or k.kid == kid)]
        return found[:MAX_TRIES]

    async def _keys_for(self, alg: str, kid: str | None) -> list[_Key]:
        found = self._matching(alg, kid)
        if found or self._config.jwks_url is None:
            if not found:
                raise AuthFailure("bad_signature", "no key of this gateway verifies the token")
            return found
        await self._refresh(throttled=True)  # a new kid may be a rotated key: one look, shared
        found = self._matching(alg, kid)
        if found:
            return found
        if not self._keys:
            raise AuthFailure("unavailable", "the identity provider's keys cannot be fetched; try again later",
                              status=503, error="")
        raise AuthFailure("bad_signature", "no key of the identity provider matches the token")

    async def _refresh(self, *, throttled: bool) -> None:
        """Fetch the JWKS; ``throttled``: only when no attempt began in the last 30 s."""
        url = self._config.jwks_url
        assert url is not None
        async with self._lock:
            if throttled and trio.current_time() - self._last_attempt < REFETCH_INTERVAL:
                return  # somebody fetched a moment ago (maybe while we waited for the lock)
            # Counted when it starts: a fetch whose requester went away still spends the interval.
            self._last_attempt = trio.current_time()
            self._fetches += 1
            try:
                keys = _parse_jwks(await self._fetch(url), self._algorithms)
            except _FetchError as e:
                self._failures += 1
                self._fetched_ok = False
                log.warning("auth.jwt.jwks_url: cannot use the JWKS at %s: %s%s", _where(url), e,
                            " (keeping the keys fetched before)" if self._keys else "")
                return
            if not self._fetched_ok or keys != self._keys:
                log.info("auth.jwt.jwks_url: %d key(s) from %s", len(keys), _where(url))
            self._fetched_ok = True
            self._install(keys)

    async def _fetch(self, url: str) -> bytes:
        if self._ssl is None:  # loading the CA bundle reads files: not in the event loop
            try:
                self._ssl = await trio.to_thread.run_sync(
                    lambda: httpx2.create_ssl_context(verify=True, trust_env=False))
            except (OSError, ssl.SSLError) as e:
                raise _FetchError(f"cannot load the CA certificates ({e})") from None
        with trio.move_on_after(FETCH_TIMEOUT) as scope:
            try:
                async with httpx2.AsyncClient(verify=self._ssl, trust_env=False, follow_redirects=False,
                                              timeout=httpx2.Timeout(FETCH_TIMEOUT)) as client:
                    return await _read_jwks(client, url)
            except httpx2.HTTPError as e:
                detail = f" ({e})" if isinstance(e, httpx2.ConnectError) else ""  # refused, TLS: no URL in it
                raise _FetchError(type(e).__name__ + detail) from None
            except OSError as e:
                raise _FetchError(e.strerror or type(e).__name__) from None
        assert scope.cancelled_caught
        raise _FetchError(f"no answer within {FETCH_TIMEOUT:g} s")

    def _install(self, keys: list[_Key]) -> None:
        if keys != self._keys:
            self._good.clear()  # a removed key must stop working now, not when its tokens expire
            self._bad.clear()  # a refusal may have been for a key that has just arrived
        self._keys = keys

    async def _check_file(self) -> None:
        now = trio.current_time()
        if now - self._file_checked < FILE_CHECK_INTERVAL:
            return
        self._file_checked = now
        assert self._file is not None
        path, where = self._file
        stamp = _stamp(path)  # one stat a second at most: cheap enough in the loop
        if stamp == self._file_stamp:
            return
        async with self._lock:
            if stamp == self._file_stamp:
                return
            self._file_stamp = stamp  # a broken file is reported once, then re-read when it changes again
            self._fetches += 1
            try:
                keys = await trio.to_thread.run_sync(self._read_file)
            except _FetchError as e:
                self._failures += 1
                log.warning("%s: %s: %s (keeping the keys read before)", where, path, e)
                return
            self._install(keys)
            log.info("%s: %s re-read: %d key(s)", where, path, len(keys))

    def _read_file(self) -> list[_Key]:
        assert self._file is not None
        path, where = self._file
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_JWKS + 1)
        except OSError as e:
            raise _FetchError(f"cannot read ({e.strerror or type(e).__name__})") from None
        if len(data) > MAX_JWKS:
            raise _FetchError(f"larger than {MAX_JWKS} bytes")
        if where == "auth.jwt.jwks_file":
            return _parse_jwks(data, self._algorithms)
        return [_pem_key(data, self._algorithms)]


async def _read_jwks(client: httpx2.AsyncClient, url: str) -> bytes:
    async with client.stream("GET", url, headers={"accept": "application/jwk-set+json, application/json",
                                                  "user-agent": "mcp-gateway/0.1.0"}) as response:
        if response.status_code != 200:
            raise _FetchError(f"HTTP {response.status_code}"
                              + (" (redirects are not followed)" if response.is_redirect else ""))
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_JWKS:
            raise _FetchError(f"larger than {MAX_JWKS} bytes")
        parts: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():  # decoded: the cap holds for compressed bodies too
            size += len(chunk)
            if size > MAX_JWKS:
                raise _FetchError(f"larger than {MAX_JWKS} bytes")
            parts.append(chunk)
        return b"".join(parts)


# -- keys from their sources -----------------------------------------------------------------------


def _key_algorithms(key: Any, configured: frozenset[str], declared: object = None) -> frozenset[str]:
    """The configured algorithms a public key can verify (a JWK's ``alg``, when given, narrows them)."""
    if isinstance(key, rsa.RSAPublicKey):
        usable = _RSA if _MIN_RSA_BITS <= key.key_size <= _MAX_RSA_BITS else frozenset()
    elif isinstance(key, ec.EllipticCurvePublicKey):
        usable = frozenset({_EC[key.curve.name]}) if key.curve.name in _EC else frozenset()
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        usable = frozenset({"EdDSA"})
    else:
        usable = frozenset()
    if declared is not None:
        usable = usable & {declared} if isinstance(declared, str) else frozenset()
    return usable & configured


def _parse_jwks(data: bytes, configured: frozenset[str]) -> list[_Key]:
    try:
        document = _jwks_decoder.decode(data)
    except msgspec.DecodeError:
        raise _FetchError("not a JSON document") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise _FetchError("not a JWKS document (an object with a 'keys' list)")
    keys: list[_Key] = []
    for i, jwk in enumerate(document["keys"][:MAX_KEYS]):
        key = _jwk_key(jwk, configured)
        if key is None:
            log.debug("JWKS key %d: not usable for %s, skipped", i, sorted(configured))
        else:
            keys.append(key)
    if not keys:
        raise _FetchError(f"no key in it verifies {', '.join(sorted(configured))} (auth.jwt.algorithms)")
    return keys


def _jwk_key(jwk: object, configured: frozenset[str]) -> _Key | None:
    """One JWK as a verification key, or None (an encryption key, a shared secret, a type or
    algorithm not configured, or material that does not parse; never an error: a JWKS may hold keys
    for others)."""
    if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
        return None
    kid = jwk.get("kid")
    ops = jwk.get("key_ops")
    if (kid is not None and not isinstance(kid, str)) or (isinstance(ops, list) and "verify" not in ops):
        return None
    kty = jwk.get("kty")
    loader = _LOADERS.get(kty) if isinstance(kty, str) else None
    if loader is None:  # "oct" among them: a shared secret does not belong in a published JWKS
        return None
    try:
        key = loader.from_jwk(jwk)
    except Exception:  # InvalidKeyError, bad base64, numbers that make no key: not a key we can use
        return None
    if not hasattr(key, "verify"):  # a private JWK: verify with its public half
        key = key.public_key()
    algorithms = _key_algorithms(key, configured, jwk.get("alg"))
    return _Key(kid, algorithms, key) if algorithms else None


def _pem_key(data: bytes, configured: frozenset[str]) -> _Key:
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError:
        raise _FetchError("not a PEM public key or certificate") from None
    algorithms = _key_algorithms(key, configured)
    if not algorithms:
        kind = type(key).__name__.removeprefix("_").removesuffix("PublicKey") or "this"
        size = getattr(key, "key_size", None)
        raise _FetchError(f"a {kind}{f' {size}-bit' if size else ''} key verifies none of "
                          f"{', '.join(sorted(configured))} (auth.jwt.algorithms; RSA keys need {_MIN_RSA_BITS} bits)")
    return _Key(None, algorithms, key)


def _secret_key(ref: str, configured: frozenset[str]) -> _Key:
    secret = resolve_secret(ref, where="auth.jwt.secret").encode("utf-8")
    algorithms = configured & _HMAC.keys()
    if not algorithms:
        raise ConfigError("a shared secret verifies HS256/HS384/HS512 only", path="auth.jwt.algorithms")
    need = max(_HMAC[a] for a in algorithms)
    if len(secret) < need:
        raise ConfigError(f"the secret is {len(secret)} bytes; {max(algorithms, key=_HMAC.__getitem__)} needs at "
                          f"least {need} (RFC 7518 section 3.2)", path="auth.jwt.secret")
    return _Key(None, frozenset(algorithms), secret)


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


# -- claims ----------------------------------------------------------------------------------------


def _malformed() -> AuthFailure:
    return AuthFailure("malformed", "the token is not a valid JWT")


def _is_time(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _starts(payload: dict[str, Any]) -> float:
    """When a token becomes valid: the later of its nbf and iat."""
    return max((float(v) for v in (payload.get("nbf"), payload.get("iat")) if _is_time(v)), default=-math.inf)


def _strings(value: object) -> frozenset[str]:
    """A claim that is a list of strings (anything else: none)."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return frozenset(value)
    return frozenset()


def _scopes(payload: dict[str, Any]) -> frozenset[str]:
    """``scope`` (RFC 8693/9068: space-separated) and ``scp`` (a list or a string, as some IdPs send)."""
    found: set[str] = set()
    for name in ("scope", "scp"):
        value = payload.get(name)
        if isinstance(value, str):
            found.update(value.split())
        else:
            found.update(_strings(value))
    return frozenset(found)


def _where(url: str) -> str:
    """A URL without userinfo or query (either may carry a credential), for logs."""
    u = urlsplit(url)
    return f"{u.scheme}://{u.hostname or ''}{f':{u.port}' if u.port else ''}{u.path}"

