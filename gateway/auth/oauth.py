"""The OAuth 2.1 resource server's side of MCP authorization (2025-11-25), as pure functions.

- :func:`protected_resource_metadata`: the RFC 9728 document served at :data:`WELL_KNOWN` (and at
  the paths of :func:`metadata_paths`), naming this gateway's ``resource`` and the authorization
  servers that issue its tokens;
- :func:`www_authenticate`: the ``WWW-Authenticate`` challenge of a 401/403, pointing clients at
  that document (``resource_metadata``), with ``error``/``error_description`` when a credential was
  refused and ``scope`` when it lacked scopes.

Every value put in a header is reduced to the characters RFC 6750 section 3 allows inside its
quoted strings, so nothing (a message, a configured scope, a path) can end the header or add a
parameter. The official SDK client reads the first ``name=`` match in the header: the parameters
it follows (``resource_metadata``, ``scope``) come before any free text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import quote, urlsplit

import msgspec

from ..config import Auth
from . import AuthFailure

WELL_KNOWN: Final = "/.well-known/oauth-protected-resource"
RESOURCE_NAME: Final = "mcp-gateway"
MAX_DESCRIPTION: Final = 200  # characters of error_description: a sentence, not a document

# RFC 6750 section 3: error and error_description are %x20-21 / %x23-5B / %x5D-7E (no '"', no '\');
# a scope token is that without the space.
_NOT_TEXT: Final = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')
_NOT_SCOPE: Final = re.compile(r'[^\x21\x23-\x5b\x5d-\x7e]')
_ERROR_CODE: Final = re.compile(r"[a-z_]{1,40}")
# What may stay unescaped in the URL's path: RFC 3986 pchar and '/', never '"' or '\'.
_PATH_SAFE: Final = "/-._~!$&'()*+,;=:@"
_encoder: Final = msgspec.json.Encoder()


def metadata_paths(mcp_paths: Iterable[str]) -> list[str]:
    """Where the metadata document is served: :data:`WELL_KNOWN`, and (RFC 9728 section 3.1) the
    well-known path with each protected endpoint's path appended (``/team-a/mcp`` ->
    ``/.well-known/oauth-protected-resource/team-a/mcp``), in order, without duplicates."""
    out = [WELL_KNOWN]
    for path in mcp_paths:
        suffix = _path(path)
        if suffix and WELL_KNOWN + suffix not in out:
            out.append(WELL_KNOWN + suffix)
    return out


def protected_resource_metadata(auth: Auth) -> bytes:
    """The RFC 9728 document (JSON). ``authorization_servers`` defaults to the JWT issuer when not
    configured (the issuer is the authorization server's identifier, RFC 8414). Needs ``auth.resource``."""
    if auth.resource is None:
        raise ValueError("auth.resource is not set: there is no protected-resource metadata to serve")
    servers = list(auth.authorization_servers)
    if not servers and auth.jwt is not None:
        servers = [auth.jwt.issuer]
    document: dict[str, Any] = {"resource": auth.resource, "authorization_servers": servers}
    if auth.scopes_supported:
        document["scopes_supported"] = list(auth.scopes_supported)
    document["bearer_methods_supported"] = ["header"]
    document["resource_name"] = RESOURCE_NAME
    return _encoder.encode(document)


def metadata_url(auth: Auth, request_path: str) -> str | None:
    """The absolute URL of the metadata document for a request to ``request_path`` (the origin of
    ``auth.resource``, then the well-known path with the request's path appended, as the SDK's
    server builds it); None when no resource is configured. The path must be one of those given
    to :func:`metadata_paths`, or the URL names a document that is not served."""
    if auth.resource is None:
        return None
    parts = urlsplit(auth.resource)
    return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN}{_path(request_path)}"


def www_authenticate(failure: AuthFailure | None, *, metadata_url: str | None) -> bytes:
    """The ``WWW-Authenticate`` value of a 401/403: ``Bearer realm="mcp-gateway"``, then
    ``resource_metadata`` (when known), then, for a refused credential (``failure.error`` set;
    RFC 6750 section 3.1: not when none was presented), ``scope`` (insufficient scope), ``error``
    and ``error_description``."""
    params = [("realm", RESOURCE_NAME)]
    if metadata_url is not None:
        params.append(("resource_metadata", _url(metadata_url)))
    if failure is not None and failure.error and _ERROR_CODE.fullmatch(failure.error):
        if failure.scope:
            scope = " ".join(t for t in (_NOT_SCOPE.sub("", s) for s in failure.scope.split()) if t)
            if scope:
                params.append(("scope", scope))
        params.append(("error", failure.error))
        params.append(("error_description", _description(failure.message)))
    return ("Bearer " + ", ".join(f'{name}="{value}"' for name, value in params)).encode("ascii")


def _path(path: str) -> str:
    """A request path as a well-known suffix: no query or fragment, percent-encoded, '' for '/'."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        path = "/" + path
    path = quote(path, safe=_PATH_SAFE + "%")
    return "" if path == "/" else path


def _url(url: str) -> str:
    # A configured URL is already well-formed; what is not URL text is percent-encoded, so no
    # quote, backslash, space or control character reaches the header.
    return quote(url, safe=_PATH_SAFE + "%?#[]")


def _description(message: str) -> str:
    # '=' too: the SDK's parser takes the first name= anywhere, even inside another value.
    text = _NOT_TEXT.sub("?", message.replace('"', "'").replace("\\", "/").replace("=", ":"))
    text = " ".join(text.split())
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 3] + "..."
