"""Handlers for course catalogs, categories and tags."""

from __future__ import annotations

from typing import Any

from connector import context, shaping
from connector.handlers import key, options
from storage import catalogs, lookups


def get_course_catalogs(**kwargs: Any) -> dict[str, Any]:
    return shaping.many("CourseCatalogs", options(kwargs))


def create_course_catalog(body: dict[str, Any]) -> dict[str, Any]:
    catalog = catalogs.create_catalog(context.services().db, context.actor(), body, context.base_url())
    return {"@odata.context": shaping.metadata("CourseCatalogs", entity=True), **catalog}


def get_courses_from_catalog(CourseCatalogId: str, **kwargs: Any) -> dict[str, Any]:
    catalog_id = key(CourseCatalogId)
    db = context.services().db
    with db.read() as conn:
        lookups.catalog(conn, catalog_id, "Id")
    return shaping.one("CourseCatalogs", catalog_id, options(kwargs))


def get_course_categories(**kwargs: Any) -> dict[str, Any]:
    return shaping.many("CourseCategories", options(kwargs))


def create_course_category(body: dict[str, Any]) -> dict[str, Any]:
    category = catalogs.create_category(context.services().db, context.actor(), body)
    return {"@odata.context": shaping.metadata("CourseCategories", entity=True), **category}


def get_course_tags(**kwargs: Any) -> dict[str, Any]:
    return shaping.many("CourseTags", options(kwargs))


def create_course_tag(body: dict[str, Any]) -> dict[str, Any]:
    tag = catalogs.create_tag(context.services().db, context.actor(), body)
    return {"@odata.context": shaping.metadata("CourseTags", entity=True), **tag}
