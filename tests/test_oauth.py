"""The RFC 9728 metadata document, its URLs and the WWW-Authenticate challenges, read back by the
official SDK's own client code (its metadata model, its discovery URLs, its header parser) and by h11."""

from __future__ import annotations

import json
import re

import h11
import httpx2
import pytest
from mcp.client.auth.utils import (
    build_protected_resource_metadata_discovery_urls,
    extract_field_from_www_auth,
    extract_resource_metadata_from_www_auth,
    extract_scope_from_www_auth,
)
from mcp.server.auth.routes import build_resource_metadata_url
from mcp.shared.auth import ProtectedResourceMetadata
from mcp.shared.auth_utils import check_resource_allowed
from pydantic import AnyHttpUrl

from gateway.auth import AuthFailure
from gateway.auth.oauth import (
    MAX_DESCRIPTION,
    WELL_KNOWN,
    metadata_paths,
    metadata_url,
    protected_resource_metadata,
    www_authenticate,
)
from gateway.config import Auth, Jwt

RESOURCE = "https://mcp.example.com"
AUTH = Auth(resource=RESOURCE, authorization_servers=["https://idp.example.com", "https://idp2.example.com"],
            scopes_supported=["mcp:tools", "mcp:read"],
            jwt=Jwt(issuer="https://issuer.example.com", jwks_url="https://issuer.example.com/jwks"))
META = RESOURCE + WELL_KNOWN + "/mcp"
# RFC 7235/6750: Bearer, then name="quoted value" pairs whose values hold no '"' or '\'.
CHALLENGE = re.compile(r'Bearer [a-z_]+="[^"\\]*"(, [a-z_]+="[^"\\]*")*')


def params(header: bytes) -> dict[str, str]:
    text = header.decode("ascii")
    assert CHALLENGE.fullmatch(text), text
    return dict(re.findall(r'([a-z_]+)="([^"]*)"', text))


def sdk_reads(header: bytes, status: int = 401) -> httpx2.Response:
    return httpx2.Response(status, headers={"WWW-Authenticate": header.decode("ascii")})


# -- the document and where it is ------------------------------------------------------------------


def test_metadata_paths() -> None:
    assert metadata_paths([]) == [WELL_KNOWN]
    assert metadata_paths(["/mcp", "/team-a/mcp", "/mcp", "/", "/sse"]) == [
        WELL_KNOWN, WELL_KNOWN + "/mcp", WELL_KNOWN + "/team-a/mcp", WELL_KNOWN + "/sse"]


def test_the_document() -> None:
    document = json.loads(protected_resource_metadata(AUTH))
    assert document == {"resource": RESOURCE,
                        "authorization_servers": ["https://idp.example.com", "https://idp2.example.com"],
                        "scopes_supported": ["mcp:tools", "mcp:read"], "bearer_methods_supported": ["header"],
                        "resource_name": "mcp-gateway"}
    # The SDK client's own model reads it (it needs at least one authorization server).
    parsed = ProtectedResourceMetadata.model_validate_json(protected_resource_metadata(AUTH))
    assert str(parsed.resource) == RESOURCE and len(parsed.authorization_servers) == 2


def test_the_document_defaults() -> None:
    # Without authorization_servers: the JWT issuer (the authorization server's identifier).
    auth = Auth(resource=RESOURCE, jwt=Jwt(issuer="https://issuer.example.com", jwks_file="/k.json"))
    document = json.loads(protected_resource_metadata(auth))
    assert document == {"resource": RESOURCE, "authorization_servers": ["https://issuer.example.com"],
                        "bearer_methods_supported": ["header"], "resource_name": "mcp-gateway"}
    ProtectedResourceMetadata.model_validate(document)
    with pytest.raises(ValueError, match="auth.resource"):
        protected_resource_metadata(Auth(api_keys=True))


@pytest.mark.parametrize("path", ["/mcp", "/team-a/mcp", "/sse", "/mcp/"])
def test_metadata_url_is_what_the_sdk_builds_and_discovers(path: str) -> None:
    url = metadata_url(AUTH, path)
    assert url == RESOURCE + WELL_KNOWN + path
    # The SDK server puts its document there for the resource at that path ...
    assert url == str(build_resource_metadata_url(AnyHttpUrl(RESOURCE + path)))
    # ... the SDK client looks there when the header is lost, and the path is among those served ...
    discovered = build_protected_resource_metadata_discovery_urls(None, RESOURCE + path)
    assert discovered == [url, RESOURCE + WELL_KNOWN]
    assert {u.removeprefix(RESOURCE) for u in discovered} <= set(metadata_paths([path]))
    # ... and it accepts the document's resource for the endpoint it talks to.
    assert check_resource_allowed(requested_resource=RESOURCE + path, configured_resource=RESOURCE)


def test_metadata_url_edge_cases() -> None:
    assert metadata_url(Auth(api_keys=True), "/mcp") is None
    assert metadata_url(AUTH, "/") == RESOURCE + WELL_KNOWN
    assert metadata_url(AUTH, "/mcp?x=1#f") == META
    assert metadata_url(Auth(resource="https://gw.example.com:8443/base"), "/mcp") == \
        "https://gw.example.com:8443" + WELL_KNOWN + "/mcp"
    assert metadata_url(AUTH, '/a"b\\c d\r\n') == RESOURCE + WELL_KNOWN + "/a%22b%5Cc%20d%0D%0A"


# -- WWW-Authenticate ------------------------------------------------------------------------------


def test_no_credential_presented() -> None:
    header = www_authenticate(None, metadata_url=META)
    assert header == b'Bearer realm="mcp-gateway", resource_metadata="' + META.encode() + b'"'
    # RFC 6750 3.1: no error code when the request carried no credential at all.
    missing = AuthFailure("missing", "authentication required", error="")
    assert www_authenticate(missing, metadata_url=META) == header
    assert extract_resource_metadata_from_www_auth(sdk_reads(header)) == META
    assert www_authenticate(None, metadata_url=None) == b'Bearer realm="mcp-gateway"'


def test_a_refused_token() -> None:
    failure = AuthFailure("expired", "the token has expired")
    header = www_authenticate(failure, metadata_url=META)
    assert header == (b'Bearer realm="mcp-gateway", resource_metadata="' + META.encode()
                      + b'", error="invalid_token", error_description="the token has expired"')
    assert extract_resource_metadata_from_www_auth(sdk_reads(header)) == META
    assert extract_scope_from_www_auth(sdk_reads(header)) is None


def test_insufficient_scope() -> None:
    failure = AuthFailure("insufficient_scope", "this gateway needs the scopes: mcp:tools mcp:read", status=403,
                          error="insufficient_scope", scope="mcp:tools mcp:read")
    header = www_authenticate(failure, metadata_url=META)
    assert params(header) == {"realm": "mcp-gateway", "resource_metadata": META, "scope": "mcp:tools mcp:read",
                              "error": "insufficient_scope",
                              "error_description": "this gateway needs the scopes: mcp:tools mcp:read"}
    response = sdk_reads(header, 403)
    assert extract_scope_from_www_auth(response) == "mcp:tools mcp:read"
    assert extract_field_from_www_auth(response, "error") == "insufficient_scope"


HOSTILE = ('bad"\r\nSet-Cookie: session=stolen\\", scope="admin", resource_metadata="https://evil.example"'
           ' resource_metadata=https://evil.example \x00\x7f é')


@pytest.mark.parametrize("with_params", [True, False])
def test_a_hostile_description_cannot_add_header_syntax(with_params: bool) -> None:
    failure = AuthFailure("malformed", HOSTILE, scope="mcp:read" if with_params else None)
    header = www_authenticate(failure, metadata_url=META if with_params else None)
    assert b"\r" not in header and b"\n" not in header and b"\\" not in header and b"\x00" not in header
    found = params(header)  # exactly the parameters we put there, each a clean quoted string
    assert set(found) == {"realm", "error", "error_description", *(("resource_metadata", "scope") if with_params
                                                                      else ())}
    assert "evil" in found["error_description"] and "=" not in found["error_description"]
    # h11 takes it as one header (a CR/LF would be refused or split it) and reads it back unchanged.
    client, server = h11.Connection(h11.CLIENT), h11.Connection(h11.SERVER)
    server.receive_data(client.send(h11.Request(method="GET", target="/mcp", headers=[("host", "x")])) or b"")
    assert isinstance(server.next_event(), h11.Request)
    client.receive_data(server.send(h11.Response(status_code=401, headers=[(b"www-authenticate", header),
                                                                           (b"content-length", b"0")])) or b"")
    response = client.next_event()
    assert isinstance(response, h11.Response)
    assert [v for k, v in response.headers if k == b"www-authenticate"] == [header]
    # The SDK's parser (first name= match anywhere) finds our values, never the description's.
    sdk = sdk_reads(header)
    assert extract_resource_metadata_from_www_auth(sdk) == (META if with_params else None)
    assert extract_scope_from_www_auth(sdk) == ("mcp:read" if with_params else None)


def test_long_descriptions_hostile_scopes_urls_and_error_codes() -> None:
    header = www_authenticate(AuthFailure("malformed", "x" * 1000), metadata_url=None)
    assert len(params(header)["error_description"]) == MAX_DESCRIPTION
    scoped = AuthFailure("insufficient_scope", "more", status=403, error="insufficient_scope",
                         scope='a"b c\\d\te \r\n')
    assert params(www_authenticate(scoped, metadata_url=None))["scope"] == "ab cd e"
    url = params(www_authenticate(None, metadata_url='https://x.example/"a b\\'))["resource_metadata"]
    assert url == "https://x.example/%22a%20b%5C"
    # An error code that is not an RFC 6750 token is left out, description and all.
    odd = AuthFailure("malformed", "m", error='invalid_token", x="y')
    assert params(www_authenticate(odd, metadata_url=None)) == {"realm": "mcp-gateway"}
