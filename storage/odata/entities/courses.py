"""The Courses entity set, with the values `$expand` adds to a course (DueDate, Publishing, ...)."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from storage.odata.entities.common import col, flag, link_sql, rows_by
from storage.odata.model import (
    BOOLEAN,
    DATETIME,
    DOUBLE,
    GUID,
    INT32,
    STRING,
    ComplexType,
    EntitySet,
    Link,
    Navigation,
    Property,
    ReadContext,
)

DUE_DATE = ComplexType(
    "CourseDueDate",
    (
        Property("CourseId", GUID),
        Property("IsEnabled", BOOLEAN),
        Property("FixedDate", DATETIME, nullable=True),
        Property("DaysAfterEnrollment", INT32, nullable=True),
    ),
)
PUBLISHING = ComplexType(
    "CoursePublishing",
    (
        Property("Id", GUID),
        Property("IsEnabled", BOOLEAN),
        Property("StartDate", DATETIME, nullable=True),
        Property("EndDate", DATETIME, nullable=True),
    ),
)
CERTIFICATE_EXPIRY = ComplexType(
    "CourseCertificateExpiry",
    (
        Property("CourseId", GUID),
        Property("IsEnabled", BOOLEAN),
        Property("FixedDate", DATETIME, nullable=True),
        Property("DaysAfterCompletion", INT32, nullable=True),
    ),
)
SHAREPOINT_WEB = ComplexType(
    "SharepointWeb",
    (Property("SiteId", STRING, nullable=True), Property("Id", STRING, nullable=True), Property("Url", STRING)),
)
LEARNING_MODULE_ITEM = ComplexType(
    "LearningModuleItem",
    (
        Property("Content", STRING, nullable=True),
        Property("EmbedType", INT32),
        Property("Id", GUID),
        Property("Title", STRING),
        Property("ItemType", INT32),
        Property("ConfirmationMessage", STRING, nullable=True),
        Property("CheckMarkMessage", STRING, nullable=True),
        Property("Type", INT32),
    ),
)
LEARNING_MODULE_CONFIGURATION = ComplexType(
    "LearningModuleConfiguration",
    (Property("LearningModuleId", GUID), Property("Items", LEARNING_MODULE_ITEM.name, collection=True)),
)
LEARNING_MODULE = ComplexType(
    "LearningModule",
    (
        Property("Id", GUID),
        Property("CourseId", GUID),
        Property("Title", STRING),
        Property("Description", STRING, nullable=True),
        Property("IsPublished", BOOLEAN),
        Property("Order", INT32),
        Property("HasPrerequisite", BOOLEAN),
        Property("Configuration", LEARNING_MODULE_CONFIGURATION.name),
    ),
)
QUIZ = ComplexType(
    "Quiz",
    (
        Property("Id", GUID),
        Property("Title", STRING),
        Property("Description", STRING, nullable=True),
        Property("MaxAttemptsLimit", INT32),
        Property("PassingPercentage", INT32),
        Property("IsPublished", BOOLEAN),
        Property("PublishingStartDate", DATETIME, nullable=True),
        Property("PublishingEndDate", DATETIME, nullable=True),
        Property("Randomize", BOOLEAN),
        Property("ShowScore", BOOLEAN),
        Property("AllowReview", BOOLEAN),
        Property("ShowCorrectAnswers", BOOLEAN),
        Property("TimeLimit", STRING, nullable=True),
        Property("ShowTimer", BOOLEAN),
        Property("ModifiedAt", DATETIME),
    ),
)
COMPLEX_TYPES = (
    DUE_DATE,
    PUBLISHING,
    CERTIFICATE_EXPIRY,
    SHAREPOINT_WEB,
    LEARNING_MODULE_ITEM,
    LEARNING_MODULE_CONFIGURATION,
    LEARNING_MODULE,
    QUIZ,
)

# The wire Url: the reserved site Url once provisioning set it, else the one asked for; both are stored
# relative to the public base URL unless a client gave an absolute one.
URL_SQL = link_sql("COALESCE({t}.site_url, {t}.url)")


def record(name: str, complex_type: ComplexType, members: Mapping[str, Property], **extra: Any) -> Property:
    """A complex-typed property built in SQL from its members' expressions (each also filterable as `A/B`)."""
    parts: list[str] = []
    context: list[str] = []
    for member in complex_type.properties:
        prop = members[member.name]
        assert prop.sql is not None, member.name
        parts.append(f"'{member.name}', {prop.sql}")
        context.extend(prop.context)
    named = tuple(
        Property(m.name, m.type, m.nullable, sql=members[m.name].sql, context=members[m.name].context)
        for m in complex_type.properties
    )
    return Property(
        name, complex_type.name, sql=f"json_object({', '.join(parts)})", context=tuple(context), members=named, **extra
    )


def _sql(sql: str, *context: str) -> Property:
    return Property("", STRING, sql=sql, context=context)


def _learning_modules(conn: sqlite3.Connection, ids: Sequence[str], ctx: ReadContext | None) -> dict[str, Any]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows_by(conn, "SELECT * FROM learning_modules WHERE course_id IN ({ids}) ORDER BY position", ids):
        out[r["course_id"]].append(
            {
                "Id": r["id"],
                "CourseId": r["course_id"],
                "Title": r["title"],
                "Description": None,
                "IsPublished": True,
                "Order": r["position"],
                "HasPrerequisite": False,
                "Configuration": {"LearningModuleId": r["id"], "Items": []},
            }
        )
    return {i: out.get(i, []) for i in ids}


def _quizzes(conn: sqlite3.Connection, ids: Sequence[str], ctx: ReadContext | None) -> dict[str, Any]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows_by(conn, "SELECT * FROM quizzes WHERE course_id IN ({ids}) ORDER BY rowid", ids):
        out[r["course_id"]].append(
            {
                "Id": r["id"],
                "Title": r["title"],
                "Description": None,
                "MaxAttemptsLimit": 0,
                "PassingPercentage": 0,
                "IsPublished": True,
                "PublishingStartDate": None,
                "PublishingEndDate": None,
                "Randomize": False,
                "ShowScore": True,
                "AllowReview": True,
                "ShowCorrectAnswers": False,
                "TimeLimit": None,
                "ShowTimer": False,
                "ModifiedAt": r["modified_at"],
            }
        )
    return {i: out.get(i, []) for i in ids}


def _people(name: str, role: str) -> Navigation:
    """Course staff in one role, by login name."""
    where = f"{{l}}.role = '{role}'"
    link = Link(
        "through", table="course_people", parent="course_id", child="user_id", where=where, order="{c}.login_name"
    )
    return Navigation(name, "Users", many=True, link=link)


COURSES = EntitySet(
    name="Courses",
    type_name="Course",
    key=("Id",),
    table="courses",
    default_order="{t}.created_at",
    live="{t}.is_deleted = 0",
    soft_delete_property="IsDeleted",
    properties=(
        col("Id", GUID, "id"),
        col("CourseCatalogId", GUID, "catalog_id"),
        col("Title", STRING, "title"),
        col("Description", STRING, "description"),
        col("LongDescription", STRING, "long_description", nullable=True),
        Property("CEU", INT32, sql="CAST({t}.ceu AS INTEGER)"),
        col("DecimalCEU", DOUBLE, "ceu"),
        flag("ShowInCatalog", "show_in_catalog"),
        flag("IsRequired", "is_required"),
        flag("IsPublished", "is_published"),
        # Ended: its publishing window closed before the ReadContext's now (the injected clock).
        Property(
            "IsEnded",
            BOOLEAN,
            sql="({t}.publishing_enabled = 1 AND {t}.publishing_end IS NOT NULL AND {t}.publishing_end < ?)",
            context=("now",),
        ),
        col("CourseID", STRING, "course_code", nullable=True),
        col("Duration", STRING, "duration", nullable=True),
        col("CourseType", STRING, "course_type"),
        col("ImageUrl", STRING, "image_url", nullable=True),
        col("CertificateTemplateId", STRING, "certificate_template_id", nullable=True),
        col("EnrollmentFlow", STRING, "enrollment_flow"),
        flag("IsDeleted", "is_deleted"),
        col("CourseSessionEnrollmentType", STRING, "session_enrollment_type"),
        col("CreatedAt", DATETIME, "created_at"),
        col("CourseLayoutId", STRING, "course_layout_id", nullable=True),
        col("Culture", STRING, "culture"),
        col("UICulture", STRING, "ui_culture"),
        Property("Url", STRING, sql=URL_SQL, context=("base_url",)),
        col("ModifiedAt", DATETIME, "modified_at"),
        record(
            "DueDate",
            DUE_DATE,
            {
                "CourseId": _sql("{t}.id"),
                "IsEnabled": _sql("{t}.due_enabled"),
                "FixedDate": _sql("{t}.due_fixed_date"),
                "DaysAfterEnrollment": _sql("{t}.due_days_after_enrollment"),
            },
            expand_only=True,
            context_link=True,
        ),
        record(
            "Publishing",
            PUBLISHING,
            {
                "Id": _sql("{t}.id"),
                "IsEnabled": _sql("{t}.publishing_enabled"),
                "StartDate": _sql("{t}.publishing_start"),
                "EndDate": _sql("{t}.publishing_end"),
            },
            expand_only=True,
            context_link=True,
        ),
        record(
            "CertificateExpiry",
            CERTIFICATE_EXPIRY,
            {
                "CourseId": _sql("{t}.id"),
                "IsEnabled": _sql("{t}.expiry_enabled"),
                "FixedDate": _sql("{t}.expiry_fixed_date"),
                "DaysAfterCompletion": _sql("{t}.expiry_days_after_completion"),
            },
            expand_only=True,
            context_link=True,
        ),
        record(
            "SharepointWeb",
            SHAREPOINT_WEB,
            {"SiteId": _sql("{t}.site_id"), "Id": _sql("{t}.web_id"), "Url": _sql(URL_SQL, "base_url")},
            expand_only=True,
        ),
        Property("ProvisioningProgress", STRING, sql="{t}.provisioning", expand_only=True, context_link=True),
        Property("ProvisioningError", STRING, nullable=True, sql="{t}.provisioning_error", expand_only=True),
        Property("LearningModules", LEARNING_MODULE.name, collection=True, expand_only=True, load=_learning_modules),
        Property("Quizzes", QUIZ.name, collection=True, expand_only=True, load=_quizzes),
    ),
    navigations=(
        Navigation(
            "Categories",
            "CourseCategories",
            many=True,
            link=Link("through", table="course_categories", parent="course_id", child="category_id", order="{c}.name"),
        ),
        Navigation(
            "Tags",
            "CourseTags",
            many=True,
            link=Link("through", table="course_tags", parent="course_id", child="tag_id", order="{c}.name"),
        ),
        Navigation(
            "CourseSessions",
            "CourseSessions",
            many=True,
            link=Link("children", column="course_id", where="{c}.is_deleted = 0", order="{c}.start_at"),
        ),
        _people("Trainers", "Trainer"),
        _people("Teachers", "Teacher"),
        _people("Admins", "Admin"),
        Navigation("CourseCatalog", "CourseCatalogs", many=False, link=Link("column", column="catalog_id")),
    ),
)
