"""Per-request context for handlers: services, the calling key, who the call acts as, URLs."""

from __future__ import annotations

from typing import Any, cast

from connexion import context

from connector.edge import Services
from storage import actors
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
    """Who this call acts as: the user named by LMS365-User-Id, else the key (as administrator).

    Raises storage.errors.Invalid when the header names no user.
    """
    s = scope()
    if "coursewire.actor" not in s:
        s["coursewire.actor"] = actors.resolve_actor(services().db, api_key(), header("LMS365-User-Id"))
    return cast(Actor, s["coursewire.actor"])


def base_url() -> str:
    """The public base URL of this server: COURSEWIRE_PUBLIC_URL, else from the request.

    Behind a proxy, X-Forwarded-Proto and X-Forwarded-Host name the scheme and host clients used.
    """
    configured = services().settings.public_url
    if configured:
        return configured
    s = scope()
    proto = (header("X-Forwarded-Proto") or s.get("scheme") or "http").split(",")[0].strip()
    host = (header("X-Forwarded-Host") or header("Host") or "").split(",")[0].strip()
    if not host:
        server = s.get("server") or ("localhost", 8365)
        host = f"{server[0]}:{server[1]}"
    return f"{proto}://{host}"


def path_and_query() -> tuple[str, str]:
    s = scope()
    return cast(str, s["path"]), cast(bytes, s.get("query_string", b"")).decode("latin-1")
