"""The Users entity set."""

from __future__ import annotations

from storage.odata.entities.common import col, flag
from storage.odata.model import DATETIME, GUID, STRING, ComplexType, EntitySet, Property

USER_FIELD_VALUE = ComplexType(
    "UserFieldValue",
    (Property("FieldId", STRING), Property("FieldTitle", STRING), Property("Value", STRING, nullable=True)),
)


def _field_value(member: str, type_: str = STRING) -> Property:
    return Property(member, type_, nullable=True, sql=f"json_extract({{t}}_fv.value, '$.{member}')")


USERS = EntitySet(
    name="Users",
    type_name="User",
    key=("Id",),
    table="users",
    joins={"manager": "LEFT JOIN users {t}_manager ON {t}_manager.id = {t}.manager_id"},
    default_order="{t}.created_at",
    live="{t}.is_deleted = 0",
    soft_delete_property="IsDeleted",
    properties=(
        col("Id", GUID, "id"),
        col("LoginName", STRING, "login_name"),
        col("Email", STRING, "email", nullable=True),
        col("Title", STRING, "title", nullable=True),
        col("Department", STRING, "department", nullable=True),
        col("ManagerId", GUID, "manager_id", nullable=True),
        Property("ManagerLoginName", STRING, nullable=True, sql="{t}_manager.login_name", joins=("manager",)),
        col("City", STRING, "city", nullable=True),
        col("Country", STRING, "country", nullable=True),
        col("DirectoryObjectId", GUID, "directory_object_id", nullable=True),
        col("Office", STRING, "office", nullable=True),
        col("JobTitle", STRING, "job_title", nullable=True),
        flag("IsExternal", "is_external"),
        col("Role", STRING, "role"),
        flag("IsDeleted", "is_deleted"),
        Property(
            "UserFieldValues",
            USER_FIELD_VALUE.name,
            collection=True,
            sql="{t}.field_values",
            exists="EXISTS (SELECT 1 FROM json_each({t}.field_values) {t}_fv WHERE {cond})",
            items=(_field_value("FieldId"), _field_value("FieldTitle"), _field_value("Value")),
        ),
        col("CreatedAt", DATETIME, "created_at"),
    ),
)
