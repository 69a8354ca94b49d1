"""Course catalogs, their categories and their tags."""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime
from typing import Any

from storage import access, events, lookups, names
from storage.db import Database, iso, new_id
from storage.errors import Conflict, Forbidden, Invalid, excerpt
from storage.models import Actor
from storage.odata import ReadContext, reading


def slug(text: str) -> str:
    """A URL path segment made from a title: lower case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "site"


def _name(body: dict[str, Any], prop: str = "Name", limit: int = 255) -> str:
    return names.clean(body.get(prop), prop, limit=limit)


_NOUN = {"categories": "category", "tags": "tag"}
# The longest tag or category name, as the document declares it (docs/limits.md): in 4-byte characters,
# with its catalog id, its index entry still fits one SQLite page cell, so writes from other callers than
# the API (the CLI, the demo) cannot make the index slower either.
MAX_NAME = 100
# Finding a category or tag of a catalog by name is an index lookup (catalog_id, name_key).
BY_NAME = {
    table: f"SELECT id FROM {table} WHERE catalog_id = ? AND name_key = ? ORDER BY rowid LIMIT 2"  # noqa: S608
    for table in _NOUN
}


def _by_name(conn: sqlite3.Connection, table: str, catalog_id: str, name: str, target: str) -> str | None:
    """The id of the category or tag of this catalog whose name has `name`'s key; None if none.

    Raises Conflict when two share it (stored before migration 0006): choosing one would be a guess.
    """
    rows = conn.execute(BY_NAME[table], (catalog_id, names.key(name))).fetchall()
    if len(rows) > 1:
        raise Conflict(
            f"{target}: {name!r} names more than one {_NOUN[table]} of this catalog (Ids"
            f" {', '.join(r['id'] for r in rows)}), stored before names were compared by case and Unicode form:"
            " refer to one by Id",
            target=target,
        )
    return str(rows[0]["id"]) if rows else None


def create_catalog(db: Database, actor: Actor, body: dict[str, Any], base_url: str) -> dict[str, Any]:
    """Create a catalog (administrators only); return it, its Url under `base_url` (the server's public base
    URL). The Url is stored as `catalogs/<slug>`, made unique, and read under the base URL of each request."""
    title = _name(body, "Title")
    now = db.clock()
    catalog_id = new_id()
    with db.write() as conn:
        access.require_admin(actor, "create course catalogs")
        admins = lookups.users_by_login(conn, body.get("AdminLogins"), "AdminLogins")
        url = f"catalogs/{slug(title)}"
        n = 1
        while conn.execute("SELECT 1 FROM catalogs WHERE url = ? COLLATE NOCASE", (url,)).fetchone():
            n += 1
            url = f"catalogs/{slug(title)}-{n}"
        conn.execute(
            "INSERT INTO catalogs (id, title, description, url, base_url, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (catalog_id, title, body.get("Description"), url, base_url.rstrip("/"), iso(now)),
        )
        conn.executemany(
            "INSERT INTO catalog_admins (catalog_id, user_id) VALUES (?, ?)", [(catalog_id, a) for a in admins]
        )
        catalog = reading.load(conn, "CourseCatalogs", [catalog_id], ReadContext(now, base_url))[catalog_id]
        events.record(
            conn, "CourseCatalogCreated", actor, now, {"catalog": catalog, "AdminIds": admins}, catalog_id=catalog_id
        )
    return catalog


def _insert_category(
    conn: sqlite3.Connection,
    actor: Actor,
    now: datetime,
    catalog_id: str,
    name: str,
    parent_id: str | None,
    target: str,
) -> str:
    existing = _by_name(conn, "categories", catalog_id, name, target)
    if existing:
        raise Conflict(
            f"category {name!r} already exists in this catalog (Id {existing}); names compare ignoring case and"
            " Unicode form",
            target=target,
        )
    if parent_id:
        parent = conn.execute("SELECT catalog_id FROM categories WHERE id = ?", (parent_id,)).fetchone()
        if parent is None or parent["catalog_id"] != catalog_id:
            raise Invalid(f"no category with id {parent_id!r} in this catalog", target="ParentCategoryId")
    category_id = new_id()
    conn.execute(
        "INSERT INTO categories (id, catalog_id, name, name_key, parent_id) VALUES (?, ?, ?, ?, ?)",
        (category_id, catalog_id, name, names.key(name), parent_id),
    )
    category = reading.load(conn, "CourseCategories", [category_id])[category_id]
    events.record(conn, "CourseCategoryCreated", actor, now, {"category": category}, catalog_id=catalog_id)
    return category_id


def _insert_tag(conn: sqlite3.Connection, actor: Actor, now: datetime, catalog_id: str, name: str, target: str) -> str:
    existing = _by_name(conn, "tags", catalog_id, name, target)
    if existing:
        raise Conflict(
            f"tag {name!r} already exists in this catalog (Id {existing}); names compare ignoring case and Unicode"
            " form",
            target=target,
        )
    tag_id = new_id()
    conn.execute(
        "INSERT INTO tags (id, catalog_id, name, name_key) VALUES (?, ?, ?, ?)",
        (tag_id, catalog_id, name, names.key(name)),
    )
    tag = reading.load(conn, "CourseTags", [tag_id])[tag_id]
    events.record(conn, "CourseTagCreated", actor, now, {"tag": tag}, catalog_id=catalog_id)
    return tag_id


def create_category(db: Database, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
    """Create a category in a catalog (catalog admins); raises Invalid, Forbidden or Conflict."""
    name = _name(body, limit=MAX_NAME)
    now = db.clock()
    with db.write() as conn:
        catalog_id = lookups.catalog(conn, body.get("CourseCatalogId") or "")["id"]
        access.require_catalog_admin(conn, actor, catalog_id, "create categories in this catalog")
        category_id = _insert_category(conn, actor, now, catalog_id, name, body.get("ParentCategoryId"), "Name")
        return reading.load(conn, "CourseCategories", [category_id])[category_id]


def create_tag(db: Database, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
    """Create a tag in a catalog (catalog admins); raises Invalid, Forbidden or Conflict."""
    name = _name(body, limit=MAX_NAME)
    now = db.clock()
    with db.write() as conn:
        catalog_id = lookups.catalog(conn, body.get("CourseCatalogId") or "")["id"]
        access.require_catalog_admin(conn, actor, catalog_id, "create tags in this catalog")
        tag_id = _insert_tag(conn, actor, now, catalog_id, name, "Name")
        return reading.load(conn, "CourseTags", [tag_id])[tag_id]


def _require_creator(
    conn: sqlite3.Connection, actor: Actor, catalog_id: str, table: str, name: str, target: str
) -> None:
    """Allow creating a category or tag named in a course body only to whoever may create one directly.

    Tags and categories belong to the whole catalog, so a course admin, who may edit one course, may link
    the ones that exist but not add to the catalog's list. Raises Forbidden naming `target`.
    """
    if not access.is_catalog_admin(conn, actor, catalog_id):
        noun = _NOUN[table]
        raise Forbidden(
            f"{target}: this catalog has no {noun} {excerpt(name)}, and only its catalog admins and administrators"
            f" may create {table}: name an existing {noun} (by name or Id), or ask a catalog admin to create it",
            target=target,
        )


def resolve_categories(
    conn: sqlite3.Connection, actor: Actor, now: datetime, catalog_id: str, items: list[dict[str, Any]] | None
) -> list[str]:
    """Category references of a course body -> ids, in order, without duplicates.

    Each item is `{"Id"}` (a category of this catalog) or `{"Name"}` (found by key, storage/names.py);
    a name the catalog does not have creates a category (with `ParentCategoryId`) when the actor is a
    catalog admin or an administrator. `IsNew` makes an item go by its Name even with an Id. Raises
    Invalid (an unknown Id, no Id or Name), Forbidden (a new name from someone else), Conflict (a name
    shared by two categories stored before migration 0006); each names the item's field.
    """
    ids: list[str] = []
    for i, item in enumerate(items or []):
        target = f"Categories[{i}]"
        if item.get("Id") and not item.get("IsNew"):
            row = conn.execute("SELECT catalog_id FROM categories WHERE id = ?", (item["Id"],)).fetchone()
            if row is None or row["catalog_id"] != catalog_id:
                raise Invalid(f"{target}.Id: no category with id {item['Id']!r} in this catalog", target=f"{target}.Id")
            ids.append(item["Id"])
            continue
        name = names.clean(item.get("Name"), f"{target}.Name", limit=MAX_NAME, required=False)
        if not name:
            raise Invalid(f"{target} needs an Id or a Name", target=target)
        existing = _by_name(conn, "categories", catalog_id, name, f"{target}.Name")
        if existing is None:
            _require_creator(conn, actor, catalog_id, "categories", name, f"{target}.Name")
            existing = _insert_category(conn, actor, now, catalog_id, name, item.get("ParentCategoryId"), target)
        ids.append(existing)
    return list(dict.fromkeys(ids))


def resolve_tags(
    conn: sqlite3.Connection, actor: Actor, now: datetime, catalog_id: str, items: list[dict[str, Any]] | None
) -> list[str]:
    """Tag references of a course body -> ids, in order, without duplicates.

    Each item is `{"Id"}` (a tag of this catalog) or `{"TagName"}`/`{"Name"}` (found by key); a name the
    catalog does not have creates a tag when the actor is a catalog admin or an administrator. Raises
    like resolve_categories.
    """
    ids: list[str] = []
    for i, item in enumerate(items or []):
        target = f"Tags[{i}]"
        if item.get("Id") and not item.get("IsNew"):
            row = conn.execute("SELECT catalog_id FROM tags WHERE id = ?", (item["Id"],)).fetchone()
            if row is None or row["catalog_id"] != catalog_id:
                raise Invalid(f"{target}.Id: no tag with id {item['Id']!r} in this catalog", target=f"{target}.Id")
            ids.append(item["Id"])
            continue
        prop = "TagName" if item.get("TagName") else "Name"
        name = names.clean(item.get(prop), f"{target}.{prop}", limit=MAX_NAME, required=False)
        if not name:
            raise Invalid(f"{target} needs an Id or a TagName", target=target)
        existing = _by_name(conn, "tags", catalog_id, name, f"{target}.{prop}")
        if existing is None:
            _require_creator(conn, actor, catalog_id, "tags", name, f"{target}.{prop}")
            existing = _insert_tag(conn, actor, now, catalog_id, name, target)
        ids.append(existing)
    return list(dict.fromkeys(ids))
