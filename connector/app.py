"""The app factory: connexion serves openapi/apiDefinition.swagger.json, handlers bound by operationId."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import connexion
from a2wsgi import WSGIMiddleware
from connexion.exceptions import ProblemException, ResolverError
from connexion.middleware import MiddlewarePosition
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolver

from calendars import pages as calendar_pages
from calendars import receiving as calendar_receiving
from certification.loading import shipped_definition
from connector import context, errors, metadata, wire
from connector.edge import CATCH_ALL, EdgeMiddleware, Services, compile_routes
from connector.handlers import calendars, catalogs, courses, enrollments, files, proxy, sessions, users, webhooks
from connector.published import PublishedDocument
from connector.settings import Settings
from connector.validation import VALIDATORS
from storage import outbound
from storage.db import Database
from storage.errors import StorageError
from storage.ratelimit import RateLimiter
from storage.secrets import SecretBox

# openapi/ in the checkout, installed as the package coursewire_openapi (pyproject.toml).
SPEC_PATH = Path(str(resources.files("coursewire_openapi"))) / "apiDefinition.swagger.json"
HANDLER_MODULES: tuple[ModuleType, ...] = (
    catalogs,
    courses,
    sessions,
    enrollments,
    users,
    calendars,
    files,
    proxy,
    webhooks,
)
# As many as a2wsgi's default, which bare connexion uses: more threads only contend for the GIL
# (bench: 32 -> 10 threads gained 7 points of GET throughput).
WSGI_THREADS = 10


def snake(operation_id: str) -> str:
    """`EnrollUserToCourse` -> `enroll_user_to_course`; `HttpRequest_v2` -> `http_request_v2`."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", operation_id).lower()


class OperationResolver(Resolver):
    """Binds each operationId to the same-named snake_case function of a handler module."""

    def resolve_function_from_operation_id(self, operation_id: str) -> Callable[..., Any]:
        name = snake(operation_id)
        for module in HANDLER_MODULES:
            function = getattr(module, name, None)
            if callable(function):
                return function  # type: ignore[no-any-return]
        raise ResolverError(f"operationId {operation_id} has no handler: define {name}() in connector/handlers/")


def load_spec(path: Path = SPEC_PATH) -> dict[str, Any]:
    """The document as connexion serves it. Two details differ from the published file:

    - Power Platform's schema forbids `format: path`, but FileUploadUrl is a relative path with
      slashes, so connexion is told to route it with its path converter;
    - `security` is dropped because EdgeMiddleware authenticates every request before routing
      (connexion would otherwise look for a basic-auth function of its own and refuse everything).
    """
    spec: dict[str, Any] = copy.deepcopy(json.loads(path.read_text()))
    spec.pop("security", None)
    for parameter in spec["paths"][CATCH_ALL]["post"]["parameters"]:
        if parameter.get("name") == "FileUploadUrl":
            parameter["format"] = "path"
    return spec


def create_app(
    settings: Settings,
    *,
    db: Database | None = None,
    validate_responses: bool = False,
    migrate: bool = False,
    resolve: Callable[[str], list[str]] = outbound.resolve,
) -> connexion.FlaskApp:
    """Build the ASGI app. `migrate=True` applies pending migrations (the CLI does it before serving)."""
    db = db or Database(settings.database_path)
    if migrate:
        db.migrate()
    limiter = (
        # One clock for every "now": the window runs on the database's clock, which tests inject.
        RateLimiter(
            settings.ratelimit_path,
            settings.rate_limit.calls,
            settings.rate_limit.period,
            clock=lambda: db.clock().timestamp(),
        )
        if settings.rate_limit
        else None
    )
    spec = load_spec()
    services = Services(
        settings=settings,
        db=db,
        limiter=limiter,
        box=SecretBox.for_database(db.path),
        resolve=resolve,
        routes=compile_routes(spec["paths"], spec.get("parameters")) + metadata.ROUTES,
    )

    # No Swagger UI, and not connexion's rendering of the document: it re-rendered it on every call, before
    # any authentication, at /swagger.json and /swagger.yaml (seconds of CPU per anonymous request), and with
    # `basePath: ""`, which Swagger 2.0 refuses. connector.published serves /swagger.json instead: the
    # published file with this server's address, rendered once per address, ahead of authentication (after
    # the exception middleware, so its refusals get the OData error body).
    app = connexion.FlaskApp(__name__, swagger_ui_options=SwaggerUIOptions(swagger_ui=False, serve_spec=False))
    app.add_middleware(
        PublishedDocument,
        position=MiddlewarePosition.BEFORE_SWAGGER,
        settings=settings,
        definition=shipped_definition(),
    )
    # The calendar page (/calendar/...) is reached with a link, not an API key: it is answered here, ahead of
    # authentication, and keeps its own sessions (calendars/pages.py).
    pages = calendar_pages.CalendarPages(
        db,
        services.box,
        settings.calendar,
        base_url=lambda scope: context.base_url_of(scope, settings),
        resolve=resolve,
    )
    # Graph and Google notifications (/calendar/notifications/...): public too, checked by the channel's secret.
    receiving = calendar_receiving.NotificationReceiver(db)
    app.add_middleware(
        calendar_pages.Mount, position=MiddlewarePosition.BEFORE_SWAGGER, pages=pages, receiving=receiving
    )
    app.add_middleware(EdgeMiddleware, position=MiddlewarePosition.BEFORE_ROUTING, services=services)
    # $metadata and the service document, for OData clients; behind the edge, so authenticated like the rest.
    app.add_middleware(metadata.MetadataMiddleware, position=MiddlewarePosition.BEFORE_ROUTING)
    app.add_api(
        spec,
        resolver=OperationResolver(),
        strict_validation=True,
        validator_map=VALIDATORS,
        validate_responses=validate_responses,
        jsonifier=wire.JSONIFIER,  # no nulls in any response (connector/wire.py)
    )
    for exc in (Exception, ProblemException, StorageError, errors.HttpError):
        app.add_error_handler(exc, errors.handle)
    for status in (404, 405, 413):
        app.add_error_handler(status, errors.handle)

    flask_app = app.app
    flask_app.json.compact = True
    flask_app.json.sort_keys = False
    flask_app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + (1 << 20)
    # HttpRequest holds a worker thread while its inner request runs on another: give the pool room.
    app._middleware_app.asgi_app = WSGIMiddleware(flask_app.wsgi_app, workers=WSGI_THREADS)
    services.app = app
    return app


def app_from_env() -> connexion.FlaskApp:
    """Factory for uvicorn workers: settings come from COURSEWIRE_* (set by `coursewire serve`)."""
    return create_app(Settings.from_env())
