"""Baseline (b): a bare connexion 3.3 FlaskApp serving bench/baseline.yaml, doing coursewire's SQLite work.

Nothing of coursewire's edge: no authentication, no throttling, no custom validators or error
handlers, connexion's default a2wsgi thread pool. What it adds over baseline (c) is exactly connexion's
own ASGI stack: routing, parameter and body validation against the document, its request context.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import baseline_db
import connexion
from connexion import request


def healthz() -> dict[str, str]:
    return {"status": "ok"}


def get_user_by_id(Id: str) -> Any:
    user = baseline_db.get_user(Id.strip("'"))
    if user is None:
        return {"error": {"code": "NotFound", "message": f"no user {Id}"}}, 404
    return {"@odata.context": f"{request.base_url}odata/v2/$metadata#Users/$entity", **user}


def create_user(body: dict[str, Any]) -> Any:
    try:
        user = baseline_db.create_user(body)
    except baseline_db.LoginTaken:
        return {"error": {"code": "Conflict", "message": "login taken", "target": "LoginName"}}, 409
    return {"@odata.context": f"{request.base_url}odata/v2/$metadata#Users/$entity", **user}


app = connexion.FlaskApp(__name__, specification_dir=Path(__file__).resolve().parent)
app.add_api("baseline.yaml")
