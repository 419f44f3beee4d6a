"""Secrets taken out of tool results (gateway/auth/redact.py): on encoded JSON bytes, from real
encoders (json with and without ensure_ascii, msgspec), always leaving valid JSON."""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from gateway.auth.redact import MIN_LENGTH, REPLACEMENT, SHAPES, Redactor

SECRET = "s3cr3t-Value_0123456789"


def encodings(data: Any) -> list[bytes]:
    """The same data as different servers' encoders write it."""
    return [json.dumps(data).encode(), json.dumps(data, ensure_ascii=False).encode(),
            json.dumps(data, separators=(",", ":")).replace("/", "\\/").encode(), msgspec.json.encode(data)]


def strings(data: Any) -> list[str]:
    """Every string of decoded JSON, keys included."""
    if isinstance(data, str):
        return [data]
    if isinstance(data, list):
        return [s for v in data for s in strings(v)]
    if isinstance(data, dict):
        return [s for k, v in data.items() for s in (k, *strings(v))]
    return []


def result(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}], "isError": False}


def test_a_configured_value_is_replaced_in_every_encoding() -> None:
    redactor = Redactor([SECRET])
    for body in encodings(result(f"the key is {SECRET}, and again:{SECRET}.")):
        out = redactor.redact(body)
        decoded = json.loads(out)
        assert decoded["content"][0]["text"] == "the key is [REDACTED], and again:[REDACTED]."
    assert redactor.statistics().redactions == 8 and redactor.statistics().redacted == 4


@pytest.mark.parametrize("value", ['pa"ss\\word/42', "tab\there-and\nnewline", "ünïcödé-sécret",
                                   "emoji😀-secret-1", "<script>&amp;\u2028-x"])
def test_a_value_that_json_escapes_is_found_however_the_encoder_wrote_it(value: str) -> None:
    redactor = Redactor([value])
    data = result(f"before {value} after")
    ascii_json = json.dumps(data)
    bodies = [*encodings(data),
              # Go's encoding/json writes <, > and & as \u003c, \u003e, \u0026
              ascii_json.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode(),
              # upper case hex digits in \uXXXX
              re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), ascii_json).encode()]
    for body in bodies:
        assert json.loads(body) == data  # (each is a valid encoding of the same data)
        text = json.loads(redactor.redact(body))["content"][0]["text"]
        assert text == "before [REDACTED] after", body


def test_a_match_that_starts_inside_an_escape_sequence_is_not_one() -> None:
    # "\\n" followed by the rest of the value: the decoded text holds a newline, not the value's "n"
    value = "nabcdefghij"
    redactor = Redactor([value])
    body = json.dumps({"t": "x\nabcdefghij"}).encode()
    assert redactor.redact(body) is body
    # ...but a literal backslash followed by the value is the value
    body = json.dumps({"t": "x\\nabcdefghij"}).encode()
    assert json.loads(redactor.redact(body)) == {"t": "x\\[REDACTED]"}
    # hex digits of a \uXXXX are not the start of a value either
    hexy = Redactor(["00e9abcdefgh"])
    body = b'{"t":"caf\\u00e9abcdefgh"}'
    assert hexy.redact(body) is body
    assert json.loads(hexy.redact(b'{"t":"caf 00e9abcdefgh"}')) == {"t": "caf [REDACTED]"}


def test_only_strings_are_touched_never_numbers_or_structure() -> None:
    redactor = Redactor(["123456789012"])
    body = b'{"n":123456789012,"s":"id 123456789012"}'
    assert json.loads(redactor.redact(body)) == {"n": 123456789012, "s": "id [REDACTED]"}
    keys = Redactor(["content-type-secret"])
    body = b'{"content-type-secret":1}'
    assert json.loads(keys.redact(body)) == {"[REDACTED]": 1}


def test_values_shorter_than_eight_characters_are_ignored() -> None:
    assert MIN_LENGTH == 8
    redactor = Redactor(["short", "1234567", "", "eightchr"], patterns=False)
    assert redactor.values == 1
    body = json.dumps(result("short 1234567 eightchr")).encode()
    assert json.loads(redactor.redact(body))["content"][0]["text"] == "short 1234567 [REDACTED]"
    nothing = Redactor(["short"], patterns=False)
    assert not nothing.active and nothing.redact(body) is body


def test_a_longer_secret_holding_a_shorter_one_goes_whole() -> None:
    redactor = Redactor(["abcdefgh", "abcdefgh-and-more-1"], patterns=False)
    body = json.dumps({"t": "abcdefgh-and-more-1 abcdefgh"}).encode()
    assert json.loads(redactor.redact(body)) == {"t": "[REDACTED] [REDACTED]"}


PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq+0PHDkSPCyXa1\nZ3cN/QpXd\u00e9+==\n"
       "-----END RSA PRIVATE KEY-----")
CREDENTIALS = {
    "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
    "google_api_key": "AIzaSyA1234567890abcdefghijklmnopqrstuv",
    "github_token": "ghp_" + "A1b2C3d4E5" * 4,
    "github_pat": "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    "slack_token": "xoxb-123456789012-1234567890123-AbCdEfGhIjKl",
    "stripe_secret_key": "sk_live_" + "a1B2c3D4e5" * 3,
    "stripe_restricted_key": "rk_test_" + "a1B2c3D4e5" * 3,
    "sk_key": "sk-ant-api03-" + "Ab3_-x" * 12,
    "jwt": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEiLCJleHAiOjE3MDB9.c2lnbmF0dXJlLWJ5dGVz",
    "pem_private_key": PEM,
}


def test_every_shape_has_a_case() -> None:
    assert {name for name, _, _ in SHAPES} - {"bearer_token", "bearer_token_lower"} == set(CREDENTIALS)


@pytest.mark.parametrize("name", sorted(CREDENTIALS))
def test_a_credential_shape_is_replaced(name: str) -> None:
    credential = CREDENTIALS[name]
    redactor = Redactor([])
    for body in encodings(result(f"found: {credential} (in the logs)")):
        text = json.loads(redactor.redact(body))["content"][0]["text"]
        assert text == "found: [REDACTED] (in the logs)", (name, body)


def test_a_bearer_token_keeps_its_scheme() -> None:
    redactor = Redactor([])
    body = json.dumps(result("Authorization: Bearer abc.DEF-123_456~789+/xyz== and bearer 0123456789abcdef0")).encode()
    text = json.loads(redactor.redact(body))["content"][0]["text"]
    assert text == "Authorization: Bearer [REDACTED] and bearer [REDACTED]"


@pytest.mark.parametrize("text", [
    "AKIAIOSFODNN7EXAMPL",  # too short
    "XAKIAIOSFODNN7EXAMPLE",  # inside a word
    "AKIAIOSFODNN7EXAMPLEX",  # inside a word
    "sk-learn-compatible-estimators-and-more-of-them",  # no digit
    "task-0123456789abcdef0123456789abcdef0123",  # 'sk-' inside a word
    "Bearer short",
    "eyJhbGciOi.notajwt",
    "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
    "a plain sentence about GitHub, Slack and AWS",
])
def test_ordinary_text_is_left_alone(text: str) -> None:
    redactor = Redactor([])
    body = json.dumps(result(text)).encode()
    assert redactor.redact(body) is body


def test_nothing_matched_returns_the_same_object_and_counts_a_scan() -> None:
    redactor = Redactor([SECRET])
    body = json.dumps(result("the time in Berlin is 12:00")).encode()
    assert redactor.redact(body) is body
    raw = msgspec.Raw(body)
    assert redactor.redact_raw(raw) is raw
    hit = msgspec.Raw(json.dumps(result(SECRET)).encode())
    out = redactor.redact_raw(hit)
    assert isinstance(out, msgspec.Raw) and json.loads(bytes(out))["content"][0]["text"] == "[REDACTED]"
    stats = redactor.statistics()
    assert (stats.scanned, stats.redacted, stats.redactions) == (3, 1, 1)
    # a match that is not inside a string (a number) changes nothing: the same object again
    numbers = Redactor(["12345678901"], patterns=False)
    body = b'{"n":12345678901}'
    assert numbers.redact(body) is body and numbers.statistics().redacted == 0


def test_the_values_are_never_in_the_redactors_repr_or_statistics() -> None:
    redactor = Redactor([SECRET])
    assert SECRET not in repr(redactor) and SECRET not in repr(redactor.statistics())


# -- a property: whatever the JSON and wherever a secret sits, the result is valid JSON without it --

_SECRET_CHARS = st.characters(codec="utf-8", exclude_characters="[]")
_secret = st.text(_SECRET_CHARS, min_size=MIN_LENGTH, max_size=24).filter(lambda s: s.strip() == s and len(s) >= 8)
_text = st.text(st.characters(codec="utf-8"), max_size=20)


def _with(secret: str) -> st.SearchStrategy[Any]:
    leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                     _text, st.builds(lambda a, b: a + secret + b, _text, _text))
    return st.recursive(leaf, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.one_of(_text, st.just(secret)), inner, max_size=4)),
        max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), secret=_secret, encoder=st.sampled_from(range(4)))
def test_any_json_with_a_secret_embedded_stays_valid_json_without_it(data: st.DataObject, secret: str,
                                                                     encoder: int) -> None:
    doc = data.draw(_with(secret))
    body = encodings(doc)[encoder]
    out = Redactor([secret], patterns=encoder % 2 == 0).redact(body)
    decoded = json.loads(out)  # valid JSON
    assert not any(secret in s for s in strings(decoded)), (secret, body, out)
    if out is not body:
        assert REPLACEMENT.decode() in json.dumps(decoded, ensure_ascii=False)
    elif not any(secret in s for s in strings(doc)):
        assert out is body
