"""Handlers for users."""

from __future__ import annotations

from typing import Any

from connector import context, shaping
from connector.handlers import key, options
from storage import users

# The certified connector's default $filter is a placeholder for the maker to replace; a flow that
# leaves it unchanged asks for all users.
PLACEHOLDER_FILTER = "Email eq '{UserEmail}'"


def get_users(**kwargs: Any) -> dict[str, Any]:
    if kwargs.get("filter") == PLACEHOLDER_FILTER:
        kwargs["filter"] = None
    return shaping.many("Users", options(kwargs))


def create_user(body: dict[str, Any]) -> dict[str, Any]:
    user = users.create(context.services().db, context.actor(), body)
    return {"@odata.context": shaping.metadata("Users", entity=True), **user}


def get_user_by_id(Id: str, **kwargs: Any) -> dict[str, Any]:
    return shaping.one("Users", key(Id), options(kwargs))


def update_user(Id: str, body: dict[str, Any]) -> dict[str, Any]:
    user = users.update(context.services().db, context.actor(), key(Id), body)
    return {"@odata.context": shaping.metadata("Users", entity=True), **user}


def delete_user(Id: str) -> tuple[None, int]:
    users.delete(context.services().db, context.actor(), key(Id))
    return None, 204
