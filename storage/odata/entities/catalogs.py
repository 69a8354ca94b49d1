"""The CourseCatalogs, CourseCategories and CourseTags entity sets."""

from __future__ import annotations

from storage.odata.entities.common import col, link_sql
from storage.odata.model import DATETIME, GUID, STRING, EntitySet, Link, Navigation, Property

COURSE_CATALOGS = EntitySet(
    name="CourseCatalogs",
    type_name="CourseCatalog",
    key=("Id",),
    table="catalogs",
    default_order="{t}.created_at",
    properties=(
        col("Id", GUID, "id"),
        col("Title", STRING, "title"),
        col("Description", STRING, "description", nullable=True),
        Property("Url", STRING, sql=link_sql("{t}.url"), context=("base_url",)),
        col("CreatedAt", DATETIME, "created_at"),
    ),
    navigations=(
        Navigation(
            "Courses",
            "Courses",
            many=True,
            link=Link("children", column="catalog_id", where="{c}.is_deleted = 0", order="{c}.created_at"),
        ),
        Navigation(
            "Admins",
            "Users",
            many=True,
            link=Link("through", table="catalog_admins", parent="catalog_id", child="user_id"),
        ),
    ),
)

COURSE_CATEGORIES = EntitySet(
    name="CourseCategories",
    type_name="CourseCategory",
    key=("Id",),
    table="categories",
    default_order="{t}.name COLLATE NOCASE",
    properties=(
        col("Id", GUID, "id"),
        col("Name", STRING, "name"),
        col("CourseCatalogId", GUID, "catalog_id"),
        col("ParentCategoryId", GUID, "parent_id", nullable=True),
    ),
)

COURSE_TAGS = EntitySet(
    name="CourseTags",
    type_name="CourseTag",
    key=("Id",),
    table="tags",
    default_order="{t}.name COLLATE NOCASE",
    properties=(col("Id", GUID, "id"), col("Name", STRING, "name"), col("CourseCatalogId", GUID, "catalog_id")),
)
