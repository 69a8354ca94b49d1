"""Per-request context for handlers: services, the calling key, who the call acts as, URLs."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, cast

from connexion import context

from connector.edge import Services, forwarded, header_values
from connector.settings import Settings
from storage.models import Actor, ApiKey


def scope() -> dict[str, Any]:
    return cast(dict[str, Any], context.scope)


def services() -> Services:
    return cast(Services, scope()["coursewire"])


def api_key() -> ApiKey:
    return cast(ApiKey, scope()["coursewire.key"])


def header(name: str) -> str | None:
    wanted = name.lower().encode("latin-1")
    for key, value in scope().get("headers", []):
        if key == wanted:
            return cast(str, value.decode("latin-1"))
    return None


def actor() -> Actor:
    """Who this call acts as, settled by the edge before routing (storage.actors.resolve_actor)."""
    return cast(Actor, scope()["coursewire.actor"])


def base_url(s: MutableMapping[str, Any] | None = None) -> str:
    """The public base URL of this server for `s` (an ASGI scope that passed the edge) or the current request;
    see `base_url_of`."""
    s = scope() if s is None else s
    return base_url_of(s, cast(Services, s["coursewire"]).settings)


def base_url_of(s: MutableMapping[str, Any], settings: Settings) -> str:
    """The public base URL of this server for the request `s` (an ASGI scope): COURSEWIRE_PUBLIC_URL, else from
    the request.

    Behind a proxy, X-Forwarded-Proto and X-Forwarded-Host name the scheme and host clients used; they
    count only when the peer is a proxy named in COURSEWIRE_TRUSTED_PROXIES, or anyone could steer the
    links (`Location`, `@odata.nextLink`) other clients are given; of a list, the value the nearest proxy
    added (the last) counts. The edge has checked them (connector.edge.EdgeMiddleware._check_forwarded), and
    so has connector.published for /swagger.json, which is answered before the edge.
    """
    if settings.public_url:
        return settings.public_url
    trusted = settings.trusts(peer(s))
    forwarded_proto = forwarded(s, b"x-forwarded-proto") if trusted else None
    forwarded_host = forwarded(s, b"x-forwarded-host") if trusted else None
    proto = (forwarded_proto or s.get("scheme") or "http").lower()
    hosts = header_values(s, b"host")
    host = forwarded_host or (hosts[0] if hosts else "")
    if not host:
        server = s.get("server") or ("localhost", 8365)
        host = f"{server[0]}:{server[1]}"
    return f"{proto}://{host}"


def peer(s: MutableMapping[str, Any]) -> str | None:
    """The address of the client that connected (a proxy, behind one)."""
    client = s.get("client")
    return str(client[0]) if client else None


def path_and_query() -> tuple[str, str]:
    s = scope()
    return cast(str, s["path"]), cast(bytes, s.get("query_string", b"")).decode("latin-1")
