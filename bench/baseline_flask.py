"""Baseline (c): a bare Flask app doing coursewire's SQLite work, served by uvicorn through a2wsgi.

a2wsgi's WSGIMiddleware is what connexion's FlaskApp wraps Flask in, so (b) and (c) differ only by
connexion's ASGI middleware stack (routing, parameter and body validation, its request context).
Its thread pool keeps a2wsgi's default (10), as the bare connexion app does.
"""

from __future__ import annotations

from typing import Any

import baseline_db
from a2wsgi import WSGIMiddleware
from flask import Flask, request

flask_app = Flask(__name__)
flask_app.json.compact = True  # type: ignore[attr-defined]
flask_app.json.sort_keys = False  # type: ignore[attr-defined]


@flask_app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@flask_app.get("/odata/v2/Users(<user_id>)")
def get_user_by_id(user_id: str) -> Any:
    user = baseline_db.get_user(user_id.strip("'"))
    if user is None:
        return {"error": {"code": "NotFound", "message": f"no user {user_id}"}}, 404
    return {"@odata.context": f"{request.host_url}odata/v2/$metadata#Users/$entity", **user}


@flask_app.post("/odata/v2/Users")
def create_user() -> Any:
    body = request.get_json()
    try:
        user = baseline_db.create_user(body)
    except baseline_db.LoginTaken:
        return {"error": {"code": "Conflict", "message": "login taken", "target": "LoginName"}}, 409
    return {"@odata.context": f"{request.host_url}odata/v2/$metadata#Users/$entity", **user}


app = WSGIMiddleware(flask_app.wsgi_app)
