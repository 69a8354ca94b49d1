"""The connector files: Power Platform schemas, certification rules, LMS365 superset, export, connexion."""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import connexion
import pytest
from connexion.resolver import Resolver

import certification

DEFINITION = certification.load_json(certification.DEFINITION_PATH)
PROPERTIES = certification.load_json(certification.PROPERTIES_PATH)
REFERENCE = certification.load_json(certification.reference_file("lms365"))
ROOT = Path(__file__).resolve().parents[1]
SHARED_REFERENCE_DIR = ROOT.parent / "shared" / "reference"

# Every warning our document may raise, with why it stays. The test fails on any other warning and on
# an entry here that no longer fires, so the list cannot go stale.
ALLOWED_WARNINGS = {
    (
        "HostNotProduction",
        "host",
    ): "the committed file carries a placeholder host; export-connector writes the real one",
    (
        "PartialDuplicateOperationPath",
        "POST /{FileUploadUrl}",
    ): "the LMS365 upload path is a one-segment catch-all; it stays last so other routes match first",
    (
        "EmptyResponseSchema",
        "POST /httprequest response 200",
    ): "HttpRequest passes the target's response through, so its shape is truly dynamic",
    (
        "EmptyResponseSchema",
        "POST /v2/httprequest response 200",
    ): "HttpRequest_v2 passes the target's response through, so its shape is truly dynamic",
    (
        "NotificationContentWithoutWebhook",
        "/webhooks/subscribe",
    ): "the LMS365 definition keeps this legacy payload-only path, so the superset keeps it too",
    **{
        ("PlaceholderValue", where): "the committed file is the template; export-connector writes the tenant's values"
        for where in (
            "info.contact.name",
            "info.contact.url",
            "info.contact.email",
            "x-ms-connector-metadata.Website",
            "x-ms-connector-metadata.Privacy policy",
        )
    },
}
# The same for apiProperties.json: the template's publisher and colour are the tenant's to replace.
PROPERTIES_PLACEHOLDERS = {"properties.publisher", "properties.stackOwner", "properties.iconBrandColor"}

TAGS = {
    "Courses",
    "CourseCatalogs",
    "CourseCategories",
    "CourseTags",
    "CourseSessions",
    "Enrollments",
    "Users",
    "Files",
    "HttpRequest",
    "Webhooks",
    "Calendars",
}
LIST_OPERATIONS = {
    "GetCourses",
    "GetCourseCatalogs",
    "GetCourseCategories",
    "GetCourseTags",
    "GetUsers",
    "GetCourseProvisioningStatus",
    "GetCourseSessions",
    "GetEnrollments",
}
SESSION_TRIGGERS = (
    "CourseSessionCreated",
    "CourseSessionUpdated",
    "CourseSessionDeleted",
    "SessionRegistration",
    "SessionUnregistration",
    "WaitlistPromotion",
    "AttendanceRecorded",
)
ADDED_OPERATIONS = {
    "CreateCourseCatalog": ("post", "/odata/v2/CourseCatalogs"),
    "GetCourses": ("get", "/odata/v2/Courses"),
    "UpdateCourse": ("patch", "/odata/v2/Courses({CourseId})"),
    "DeleteCourse": ("delete", "/odata/v2/Courses({CourseId})"),
    "PublishCourse": ("post", "/odata/v2/Courses({CourseId})/Publish"),
    "UnpublishCourse": ("post", "/odata/v2/Courses({CourseId})/Unpublish"),
    "GetCourseSessions": ("get", "/odata/v2/Courses({courseId})/CourseSessions"),
    "GetCourseSessionById": ("get", "/odata/v2/CourseSessions({Id})"),
    "UpdateCourseSession": ("patch", "/odata/v2/CourseSessions({Id})"),
    "DeleteCourseSession": ("delete", "/odata/v2/CourseSessions({Id})"),
    "RecordAttendance": ("post", "/odata/v2/CourseSessions({Id})/Attendance"),
    "CreateUser": ("post", "/odata/v2/Users"),
    "GetUserById": ("get", "/odata/v2/Users({Id})"),
    "UpdateUser": ("patch", "/odata/v2/Users({Id})"),
    "DeleteUser": ("delete", "/odata/v2/Users({Id})"),
    "GetEnrollments": ("get", "/odata/v2/Enrollments"),
    "StartEnrollment": ("post", "/odata/v2/Enrollments({Id})/Start"),
    "GetWebhookSubscription": ("get", "/webhooks/subscriptions({Id})"),
    "DeleteWebhookSubscription": ("delete", "/webhooks/subscriptions({Id})"),
    "GetWebhookSubscriptions": ("get", "/webhooks/subscriptions"),
    "GetWebhookDeliveries": ("get", "/webhooks/deliveries"),
    "GetWebhookDelivery": ("get", "/webhooks/deliveries({Id})"),
    "RedeliverWebhookDelivery": ("post", "/webhooks/deliveries({Id})/Redeliver"),
    **{event: ("post", f"/webhooks/subscribe/{event}") for event in SESSION_TRIGGERS},
    # The calendar mirror (issue 10).
    "GetCalendarSettings": ("get", "/odata/v2/CalendarSettings"),
    "UpdateCalendarSettings": ("patch", "/odata/v2/CalendarSettings"),
    "GetCalendarConnections": ("get", "/odata/v2/CalendarConnections"),
    "CreateCalendarConnectionLink": ("post", "/odata/v2/Users({Id})/CalendarConnectionLink"),
    "GetCalendarConnection": ("get", "/odata/v2/Users({Id})/CalendarConnection"),
    "ConnectCalendar": ("put", "/odata/v2/Users({Id})/CalendarConnection"),
    "UpdateCalendarConnection": ("patch", "/odata/v2/Users({Id})/CalendarConnection"),
    "DeleteCalendarConnection": ("delete", "/odata/v2/Users({Id})/CalendarConnection"),
    "CalendarConnectionNeedsReauthorization": ("post", "/webhooks/subscribe/CalendarConnectionNeedsReauthorization"),
    # The two-way mirror (issue 11).
    "GetCalendarSyncHealth": ("get", "/odata/v2/CalendarSyncHealth"),
    # Tenant-wide Microsoft 365 (issue 11).
    "GetCalendarTenant": ("get", "/odata/v2/CalendarTenant"),
    "ConnectCalendarTenant": ("put", "/odata/v2/CalendarTenant"),
    "DisconnectCalendarTenant": ("delete", "/odata/v2/CalendarTenant"),
}
# docs/design.md "Entity shapes": s string, dt date-time, b boolean, i int32, i64 int64, d double, ? nullable.
ENTITY_SHAPES = {
    "CourseCatalog": "Id s, Title s, Description s?, Url s, CreatedAt dt, Courses[] Course, Admins[] User",
    "CourseCategory": "Id s, Name s, CourseCatalogId s, ParentCategoryId s?",
    "CourseTag": "Id s, Name s, CourseCatalogId s",
    "Course": (
        "Id s, CourseCatalogId s, Title s, Description s, LongDescription s?, CEU i, DecimalCEU d, "
        "ShowInCatalog b, IsRequired b, IsPublished b, IsEnded b, CourseID s?, Duration s?, CourseType s, "
        "ImageUrl s?, CertificateTemplateId s?, EnrollmentFlow s, IsDeleted b, "
        "CourseSessionEnrollmentType s, "
        "CreatedAt dt, CourseLayoutId s?, Culture s, UICulture s, Url s, ModifiedAt dt, "
        "ProvisioningProgress s, Categories[] CourseCategory, Tags[] CourseTag, "
        "CourseSessions[] CourseSession, Trainers[] User, Teachers[] User, Admins[] User"
    ),
    "CourseSession": (
        "Id s, CourseId s, Title s, StartDate dt, EndDate dt, TimeZone s, Details s?, MeetingUrl s?, "
        "MaxAttendees i?, EnrollmentDeadline dt?, AttendeesCount i, WaitlistCount i, CreatedAt dt, "
        "ModifiedAt dt, Instructors[] User, Registrations[] SessionRegistration, Attendance[] Attendance"
    ),
    "SessionRegistration": (
        "Id s, EnrollmentId s, CourseSessionId s, UserId s, Status s, WaitlistPosition i?, RegisteredAt dt"
    ),
    "Attendance": ("Id s, CourseSessionId s, CourseSessionDayId s, EnrollmentId s, UserId s, Status s, RecordedAt dt"),
    "User": (
        "Id s, LoginName s, Email s?, Title s?, Department s?, ManagerId s?, ManagerLoginName s?, City s?, "
        "Country s?, DirectoryObjectId s?, Office s?, JobTitle s?, IsExternal b, Role s, IsDeleted b, "
        "CreatedAt dt"
    ),
    "Enrollment": (
        "Id s, CourseId s, UserId s, UserLoginName s, RegistrationDate dt, StartDate dt?, "
        "CompletionDate s?, RegistrationStatus s, CoursePassingStatus s, CertificateId s?, CEU i, "
        "DecimalCEU d, DueDate dt?, EndDate s?, IsPartOfTrainingPlan b, CanUnenroll b, "
        "CancellationReason s?, courseSessionId s?, EnrollmentStatus i, EnrollmentStatusText s, "
        "WaitlistPosition i?, ModifiedAt dt, Course Course, User User, CourseSession CourseSession, "
        "Registrations[] SessionRegistration, Attendance[] Attendance"
    ),
    "ProvisioningStatus": "Id s, ProvisioningProgress s, ProvisioningError s?",
    "WebhookSubscription": "Id s, Event s, WebHookUri s, CreatedAt dt, Location s",
    "FileInfo": "Id s, Path s, FileName s, Size i64, ContentType s, Sha256 s, UploadedAt dt",
}
SCALARS = {
    "s": ("string", None),
    "dt": ("string", "date-time"),
    "b": ("boolean", None),
    "i": ("integer", "int32"),
    "i64": ("integer", "int64"),
    "d": ("number", "double"),
}


def operations(doc: dict[str, Any] = DEFINITION) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """operationId -> (method, path, operation) for every operation of a document."""
    return {
        op["operationId"]: (method, path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in certification.METHODS
    }


def mutated(change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    doc = copy.deepcopy(DEFINITION)
    change(doc)
    return doc


def rules(problems: list[certification.Problem]) -> set[str]:
    return {p.rule for p in problems}


# --------------------------------------------------------------------------------------------- our files


def test_definition_validates_against_power_platform_schema() -> None:
    """The document passes Power Platform's JSON schema (x-ms-editor aside, as the checker documents)."""
    assert [p for p in certification.check_definition(DEFINITION) if p.rule == "Schema"] == []


def test_definition_has_no_certification_errors_and_only_allowed_warnings() -> None:
    """Every offline certification rule passes; the only warnings are the justified ones above."""
    size = certification.DEFINITION_PATH.stat().st_size
    problems = certification.check_definition(DEFINITION, size=size)
    assert [str(p) for p in problems if p.severity == "error"] == []
    assert {(p.rule, p.where) for p in problems if p.severity == "warning"} == set(ALLOWED_WARNINGS)
    assert size < certification.MAX_FILE_BYTES


def test_properties_validate() -> None:
    """apiProperties.json passes its schema, the icon and publisher rules and fits the definition's auth; the
    template's publisher and colour are reported as placeholders."""
    problems = certification.check_properties(PROPERTIES, DEFINITION)
    assert [str(p) for p in problems if p.severity == "error"] == []
    assert {(p.rule, p.where) for p in problems if p.severity == "warning"} == {
        ("PlaceholderValue", where) for where in PROPERTIES_PLACEHOLDERS
    }


def test_definition_is_a_superset_of_the_lms365_connector() -> None:
    """Every LMS365 path, operation, parameter, body field, status and response field survives unchanged."""
    assert [str(p) for p in certification.check_superset(DEFINITION, REFERENCE)] == []


def test_check_all_reports_no_errors() -> None:
    """`coursewire check` (certification.check_all) finds no errors in the committed files."""
    assert [str(p) for p in certification.check_all() if p.severity == "error"] == []


def test_vendored_reference_files_match_the_shared_copies() -> None:
    """The copies in openapi/schemas/ stay byte-identical to the shared reference folder."""
    shared = SHARED_REFERENCE_DIR
    if not shared.is_dir():
        pytest.skip("the shared reference folder is not next to this checkout")
    pairs = [
        (certification.DEFINITION_SCHEMA, certification.DEFINITION_SCHEMA),
        (certification.PROPERTIES_SCHEMA, certification.PROPERTIES_SCHEMA),
        ("lms365.reference.swagger.json", "lms365.apiDefinition.swagger.json"),
    ]
    for vendored, original in pairs:
        assert (certification.VENDORED_DIR / vendored).read_bytes() == (shared / original).read_bytes(), vendored


# --------------------------------------------------------------------------------------------- design


def test_added_operations_are_where_the_design_puts_them() -> None:
    """Each operation docs/design.md adds exists with its method and path."""
    ops = operations()
    for operation_id, (method, path) in ADDED_OPERATIONS.items():
        assert ops[operation_id][:2] == (method, path), operation_id
    assert len(ops) == len(operations(REFERENCE)) + len(ADDED_OPERATIONS)


def test_every_operation_has_a_tag_and_a_schema_less_default() -> None:
    """Operations carry one known tag and the shared OData error default response, which has no schema."""
    assert "schema" not in DEFINITION["responses"]["ErrorResponse"]
    for operation_id, (_, _, op) in operations().items():
        assert len(op["tags"]) == 1 and op["tags"][0] in TAGS, operation_id
        assert op["responses"]["default"] == {"$ref": "#/responses/ErrorResponse"}, operation_id


def test_upload_catch_all_is_the_last_path() -> None:
    """connexion matches routes in order, so the one-segment upload template must come after every path."""
    assert list(DEFINITION["paths"])[-1] == "/{FileUploadUrl}"


def test_list_operations_take_odata_options_and_are_pageable() -> None:
    """List actions accept the seven OData options and let the platform follow @odata.nextLink."""
    shared = DEFINITION["parameters"]
    for operation_id in LIST_OPERATIONS:
        op = operations()[operation_id][2]
        params = {}
        for param in op["parameters"]:
            param = shared[param["$ref"].rsplit("/", 1)[-1]] if "$ref" in param else param
            params[param["name"]] = param
        assert set(params) >= {"$filter", "$select", "$expand", "$orderby", "$top", "$skip", "$count"}
        assert (params["$top"]["minimum"], params["$top"]["maximum"]) == (0, 1000)
        assert params["$skip"]["minimum"] == 0
        assert params["$count"]["type"] == "boolean"
        assert op["x-ms-pageable"] == {"nextLinkName": "@odata.nextLink"}, operation_id


def test_write_actions_accept_the_on_behalf_header() -> None:
    """Every write action except the platform-driven ones takes LMS365-User-Id, as the LMS365 ones do."""
    platform_driven = {"HttpRequest", "HttpRequest_v2", "DeleteWebhookSubscription"}
    for operation_id, (method, _, op) in operations().items():
        if method == "get" or "x-ms-trigger" in op or operation_id in platform_driven:
            continue
        assert {"$ref": "#/parameters/onBehalfOfUserParameter"} in op["parameters"], operation_id


def test_entity_definitions_follow_the_design() -> None:
    """Response definitions have the property names, types, formats and nullability of docs/design.md."""
    definitions = DEFINITION["definitions"]
    for entity, shape in ENTITY_SHAPES.items():
        properties = definitions[entity]["properties"]
        for field in shape.split(", "):
            name, kind = field.split(" ")
            many = name.endswith("[]")
            prop = properties[name.removesuffix("[]")]
            if many:
                assert prop["type"] == "array", f"{entity}.{name}"
                prop = prop["items"]
            if kind.rstrip("?") in SCALARS:
                type_, format_ = SCALARS[kind.rstrip("?")]
                assert (prop["type"], prop.get("format")) == (type_, format_), f"{entity}.{name}"
                assert prop.get("x-nullable", False) == kind.endswith("?"), f"{entity}.{name}"
                assert prop["x-ms-summary"] and prop["description"], f"{entity}.{name}"
            else:
                assert prop == {"$ref": f"#/definitions/{kind}"}, f"{entity}.{name}"


def test_triggers_answer_201_with_location_and_document_their_payload() -> None:
    """Subscribing answers 201 with a Location (200 when already subscribed); the payload is declared."""
    for operation_id, (_, path, op) in operations().items():
        if "x-ms-trigger" not in op:
            continue
        responses = op["responses"]
        assert responses["201"]["schema"] == {"$ref": "#/definitions/WebhookSubscription"}, operation_id
        assert "schema" not in responses["200"] and "Location" in responses["201"]["headers"], operation_id
        assert op["summary"].startswith("When a"), operation_id
        assert op["description"].startswith("This operation triggers when"), operation_id
        assert "schema" in DEFINITION["paths"][path]["x-ms-notification-content"], operation_id


# --------------------------------------------------------------------------------------------- the checker


def _delete_reference_parameter(doc: dict[str, Any]) -> None:
    params = doc["paths"]["/odata/v2/Courses({CourseId})"]["get"]["parameters"]
    params[:] = [p for p in params if p.get("name") != "$expand"]


def _summary_with_period(doc: dict[str, Any]) -> None:
    doc["paths"]["/odata/v2/Courses"]["get"]["summary"] = "List courses."


def _path_param_without_encoding(doc: dict[str, Any]) -> None:
    del doc["paths"]["/odata/v2/Enrollments({Id})/Approve"]["post"]["parameters"][0]["x-ms-url-encoding"]


def _wrong_next_link(doc: dict[str, Any]) -> None:
    doc["paths"]["/odata/v2/Courses"]["get"]["x-ms-pageable"] = {"nextLinkName": "next"}


def _next_link_not_in_response(doc: dict[str, Any]) -> None:
    del doc["definitions"]["CourseCollection"]["properties"]["@odata.nextLink"]


def _default_with_schema(doc: dict[str, Any]) -> None:
    doc["paths"]["/odata/v2/Courses"]["get"]["responses"]["default"] = {
        "description": "x",
        "schema": {"type": "object"},
    }


def _two_schemas(doc: dict[str, Any]) -> None:
    doc["paths"]["/odata/v2/Courses"]["get"]["responses"]["202"] = {
        "description": "x",
        "schema": {"type": "object"},
    }


def _body_on_get(doc: dict[str, Any]) -> None:
    doc["paths"]["/odata/v2/Courses"]["get"]["parameters"].append(
        {"name": "body", "in": "body", "schema": {"type": "object"}}
    )


def _notification_url_visible(doc: dict[str, Any]) -> None:
    del doc["definitions"]["WebhookSubscribeBody"]["properties"]["WebHookUri"]["x-ms-visibility"]
    for item in doc["paths"].values():
        for param in item.get("post", {}).get("parameters", []):
            param.pop("x-ms-visibility", None)


def _no_notification_content(doc: dict[str, Any]) -> None:
    del doc["paths"]["/webhooks/subscribe/UserCreated"]["x-ms-notification-content"]


def _duplicate_operation_id(doc: dict[str, Any]) -> None:
    doc["paths"]["/odata/v2/Users"]["post"]["operationId"] = "GetUsers"


def _operation_id_with_dash(doc: dict[str, Any]) -> None:
    doc["paths"]["/odata/v2/Users"]["post"]["operationId"] = "Create-User"


def _encoded_query_parameter(doc: dict[str, Any]) -> None:
    doc["parameters"]["filterParameter"]["x-ms-url-encoding"] = "single"


def _title_with_api(doc: dict[str, Any]) -> None:
    doc["info"]["title"] = "coursewire LMS API"


def _missing_dynamic_operation(doc: dict[str, Any]) -> None:
    doc["definitions"]["CourseInput"]["properties"]["CourseCatalogId"]["x-ms-dynamic-values"]["operationId"] = "Nope"


def _ref_with_sibling(doc: dict[str, Any]) -> None:
    doc["definitions"]["Course"]["properties"]["DueDate"]["description"] = "x"


def _case_duplicate_path(doc: dict[str, Any]) -> None:
    doc["paths"]["/odata/v2/courses"] = copy.deepcopy(doc["paths"]["/odata/v2/Courses"])


def _path_param_not_required(doc: dict[str, Any]) -> None:
    doc["paths"]["/odata/v2/Enrollments({Id})/Approve"]["post"]["parameters"][0]["required"] = False


def _internal_required_without_default(doc: dict[str, Any]) -> None:
    doc["parameters"]["onBehalfOfUserParameter"].update({"required": True, "x-ms-visibility": "internal"})


def _ref_loop(doc: dict[str, Any]) -> None:
    doc["definitions"]["CourseCatalogSummary"]["properties"]["Courses"] = {
        "type": "array",
        "items": {"$ref": "#/definitions/Course"},
    }


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (_summary_with_period, "SummaryEndsWithPunctuation"),
        (_path_param_without_encoding, "PathParameterMissingEncoding"),
        (_wrong_next_link, "InvalidNextLinkNameValue"),
        (_next_link_not_in_response, "NextLinkPropertyMissing"),
        (_default_with_schema, "DefaultResponseHasSchema"),
        (_two_schemas, "OperationHasManyResponsesWithSchema"),
        (_body_on_get, "BodyNotAllowedOnGet"),
        (_notification_url_visible, "NotificationUrlNotInternal"),
        (_no_notification_content, "OperationMustHaveNotificationContentExtension"),
        (_duplicate_operation_id, "OperationIdNotUnique"),
        (_operation_id_with_dash, "OperationIdSanitized"),
        (_encoded_query_parameter, "QueryParameterEncodingNotSupported"),
        (_title_with_api, "TitleRestrictedWords"),
        (_missing_dynamic_operation, "DynamicOperationNotFound"),
        (_ref_with_sibling, "RefWithSiblings"),
        (_case_duplicate_path, "PathRedefined"),
        (_path_param_not_required, "PathParameterMustBeRequired"),
        (_internal_required_without_default, "InternalRequiredWithoutDefault"),
        (_ref_loop, "RefLoop"),
    ],
)
def test_checker_catches_a_broken_definition(change: Callable[[dict[str, Any]], None], rule: str) -> None:
    """Each certification rule fires on a document that breaks it."""
    assert rule in rules(certification.check_definition(mutated(change)))


MALFORMED = {
    "parameters is a string": {"/x": {"get": {"parameters": "nope", "responses": {"200": {"description": "ok"}}}}},
    "a parameter is a number": {"/x": {"get": {"parameters": [1], "responses": {"200": {"description": "ok"}}}}},
    "paths is a list": [],
    "responses is a list": {"/x": {"get": {"responses": []}}},
}


@pytest.mark.parametrize("paths", list(MALFORMED.values()), ids=list(MALFORMED))
def test_check_reports_a_malformed_document_instead_of_failing(tmp_path: Path, paths: Any) -> None:
    """A document of the wrong shapes (what `coursewire check FILE` may be given) yields errors, the schema's
    among them, never a traceback; so does one with definitions of the wrong shape."""
    doc = {"swagger": "2.0", "info": {"title": "x", "version": "1"}, "paths": paths, "definitions": [1]}
    target = tmp_path / "apiDefinition.swagger.json"
    target.write_text(json.dumps(doc), encoding="utf-8")
    problems = certification.check_all(target, None)
    assert "Schema" in rules(problems)
    assert all(p.severity == "error" for p in problems if p.rule == "CheckStopped")


def test_checker_catches_an_oversized_file() -> None:
    """A definition file of 1 MB or more is refused."""
    assert "SwaggerTooLarge" in rules(certification.check_definition(DEFINITION, size=certification.MAX_FILE_BYTES))


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (_delete_reference_parameter, "ParameterMissing"),
        (lambda d: d["paths"].pop("/odata/v2/CourseTags"), "OperationMissing"),
        (
            lambda d: d["paths"]["/odata/v2/Courses({courseId})/Enroll"]["post"].update(operationId="Enroll"),
            "OperationIdChanged",
        ),
        (
            lambda d: d["definitions"]["Enrollment"]["properties"]["CEU"].update(type="number"),
            "ResponsePropertyTypeChanged",
        ),
        (
            lambda d: d["definitions"]["Enrollment"]["properties"]["RegistrationDate"].pop("format"),
            "ResponsePropertyFormatChanged",
        ),
        (
            lambda d: d["definitions"]["CourseInput"]["properties"].pop("FailedCourseId"),
            "BodyPropertyMissing",
        ),
        (
            lambda d: d["definitions"]["CourseInput"]["required"].append("Duration"),
            "BodyPropertyNewlyRequired",
        ),
        (lambda d: d["definitions"]["WindowsTimeZone"]["enum"].remove("UTC"), "BodyEnumValueMissing"),
        (
            lambda d: d["paths"]["/webhooks/subscribe/CourseStarted"]["post"]["responses"].pop("200"),
            "ResponseMissing",
        ),
        (
            lambda d: d["definitions"]["UserNotificationPayload"]["properties"].pop("Attempt"),
            "ResponsePropertyMissing",
        ),
        (
            lambda d: d["paths"]["/odata/v2/Users"]["get"]["parameters"][0].update(default=None),
            "ParameterChanged",
        ),
    ],
)
def test_superset_check_catches_a_broken_contract(change: Callable[[dict[str, Any]], Any], rule: str) -> None:
    """Removing or changing anything LMS365 callers rely on is reported."""
    assert rule in rules(certification.check_superset(mutated(change), REFERENCE))


def test_office_format_is_the_only_documented_difference() -> None:
    """GetUsers' Office drops the reference's date-time format on purpose; the checker knows that one only."""
    office = DEFINITION["definitions"]["User"]["properties"]["Office"]
    assert office["type"] == "string" and "format" not in office
    assert set(certification.FORMAT_EXCEPTIONS) == {("GetUsers", "200", "value[].Office")}


def test_checker_reproduces_the_lms365_certified_baseline() -> None:
    """On the certified LMS365 file the checker flags exactly the baseline the contract notes list (1.6)."""
    problems = certification.check_definition(REFERENCE)
    errors = {(p.rule, p.where) for p in problems if p.severity == "error"}
    assert errors == {
        ("OperationShouldHaveSuccessfulResponse", "POST /httprequest"),
        ("OperationShouldHaveSuccessfulResponse", "POST /v2/httprequest"),
        ("DefaultResponseHasSchema", "POST /httprequest"),
        ("DefaultResponseHasSchema", "POST /v2/httprequest"),
    }
    warnings = Counter(p.rule for p in problems if p.severity == "warning")
    assert warnings["DescriptionNotSentence"] == 29
    assert warnings["EmptyResponseSchema"] == 13
    assert warnings["PathParameterMissingEncoding"] == 1
    assert warnings["NotificationContentWithoutWebhook"] == 1
    assert warnings["SummaryNotSentenceCase"] == 1  # "Upload File"
    assert "OperationIdSanitized" not in rules(problems)  # HttpRequest_v2 is a family revision


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        (lambda p: p["properties"].update(iconBrandColor="#007EE5"), "IconBrandColorNotAllowed"),
        (lambda p: p["properties"].pop("iconBrandColor"), "IconBrandColorMissing"),
        (lambda p: p["properties"].pop("publisher"), "PublisherMissing"),
        (lambda p: p["properties"].update(stackOwner="course-wire!"), "PublisherNotAlphanumeric"),
        (lambda p: p["properties"]["connectionParameters"].pop("password"), "BasicAuthParameterMissing"),
        (lambda p: p["properties"].pop("policyTemplateInstances"), "UpdateNextLinkPolicyMissing"),
        (lambda p: p["properties"]["connectionParameters"]["username"].update(type="text"), "Schema"),
    ],
)
def test_properties_check_catches_broken_files(change: Callable[[dict[str, Any]], Any], rule: str) -> None:
    """apiProperties rules fire on files that break them."""
    properties = copy.deepcopy(PROPERTIES)
    change(properties)
    assert rule in rules(certification.check_properties(properties, DEFINITION))


# --------------------------------------------------------------------------------------------- declared limits

LIMITS_PAGE = ROOT / "docs" / "limits.md"
# Request bodies and the entity a response returns for them: what is stored comes back within the
# response's limits, and what is read back can be sent again in a PATCH.
ROUND_TRIPS = {
    "CourseInput": "Course",
    "CourseChanges": "Course",
    "CourseSessionInput": "CourseSession",
    "CourseSessionChanges": "CourseSession",
    "UserInput": "User",
    "UserChanges": "User",
}


def test_every_value_declares_a_limit() -> None:
    """Every string, array and free-form object of the document declares maxLength, maxItems or maxProperties."""
    nodes = list(certification.limit_nodes(DEFINITION))
    counts = Counter(n.kind for n in nodes)
    assert counts == {"string": 586, "array": 69, "object": 10}
    said = " ".join((ROOT / "docs" / "limits.md").read_text().split())  # the page says the same numbers
    assert f"{counts['string']} strings, {counts['array']} arrays and {counts['object']} free-form objects" in said
    assert [str(p) for p in certification.check_limits(DEFINITION)] == []


def _drop(*path: str, key: str) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        node: Any = doc
        for part in path:
            node = node[int(part)] if isinstance(node, list) else node[part]
        del node[key]

    return change


@pytest.mark.parametrize(
    ("change", "rule", "where"),
    [
        (
            _drop("definitions", "CourseInput", "properties", "Title", key="maxLength"),
            "StringWithoutMaxLength",
            "definitions/CourseInput Title",
        ),
        (
            _drop(
                "definitions",
                "CourseSessionInput",
                "properties",
                "Days",
                "items",
                "properties",
                "StartDate",
                key="maxLength",
            ),
            "StringWithoutMaxLength",
            "definitions/CourseSessionInput Days[].StartDate",
        ),
        (
            _drop("definitions", "CourseSessionChanges", "properties", "Days", key="maxItems"),
            "ArrayWithoutMaxItems",
            "definitions/CourseSessionChanges Days",
        ),
        (
            _drop("definitions", "HttpRequestBodyParameters", "properties", "headers", key="maxProperties"),
            "ObjectWithoutMaxProperties",
            "definitions/HttpRequestBodyParameters headers",
        ),
        (
            _drop(
                "definitions",
                "HttpRequestBodyParameters_v2",
                "properties",
                "headers",
                "additionalProperties",
                key="maxLength",
            ),
            "StringWithoutMaxLength",
            "definitions/HttpRequestBodyParameters_v2 headers{}",
        ),
        (
            _drop("definitions", "WindowsTimeZone", key="maxLength"),
            "StringWithoutMaxLength",
            "definitions/WindowsTimeZone",
        ),
        (
            _drop(
                "definitions",
                "SessionNotificationPayload",
                "properties",
                "Notifications",
                "items",
                "properties",
                "Changes",
                "items",
                "properties",
                "After",
                key="maxLength",
            ),
            "StringWithoutMaxLength",
            "definitions/SessionNotificationPayload Notifications[].Changes[].After",
        ),
        (
            _drop("parameters", "filterParameter", key="maxLength"),
            "StringWithoutMaxLength",
            "parameters/filterParameter",
        ),
        (
            _drop("paths", "/odata/v2/Courses({CourseId})", "get", "parameters", "0", key="maxLength"),
            "StringWithoutMaxLength",
            "GET /odata/v2/Courses({CourseId}) parameter CourseId",
        ),
        (
            _drop(
                "paths",
                "/odata/v2/CourseCatalogs",
                "post",
                "parameters",
                "0",
                "schema",
                "properties",
                "AdminLogins",
                key="maxItems",
            ),
            "ArrayWithoutMaxItems",
            "POST /odata/v2/CourseCatalogs parameter body AdminLogins",
        ),
        (
            _drop(
                "paths",
                "/webhooks/subscribe/CourseCompleted",
                "post",
                "responses",
                "201",
                "headers",
                "Location",
                key="maxLength",
            ),
            "StringWithoutMaxLength",
            "POST /webhooks/subscribe/CourseCompleted response 201 header Location",
        ),
        (
            lambda d: d["definitions"]["WebhookDelivery"]["properties"]["Payload"]["items"].pop("maxProperties"),
            "ObjectWithoutMaxProperties",
            "definitions/WebhookDelivery Payload[]",
        ),
        (
            lambda d: d["definitions"]["User"]["properties"]["Title"].update(maxLength=0),
            "StringWithoutMaxLength",
            "definitions/User Title",
        ),
        (
            lambda d: d["paths"]["/v2/httprequest"]["post"]["responses"]["200"].update(
                schema={"type": "object", "additionalProperties": True}
            ),
            "ObjectWithoutMaxProperties",
            "POST /v2/httprequest response 200",
        ),
    ],
)
def test_limit_check_names_a_value_without_a_limit(
    change: Callable[[dict[str, Any]], Any], rule: str, where: str
) -> None:
    """A string, array or free-form object left without its limit, anywhere in the document, is an error."""
    problems = certification.check_limits(mutated(change))
    assert [(p.rule, p.where, p.severity) for p in problems] == [(rule, where, "error")]


def test_coursewire_check_fails_on_a_missing_limit(tmp_path: Path) -> None:
    """`coursewire check` (check_all) reports a missing limit as an error, so a file without it cannot pass."""
    target = tmp_path / "apiDefinition.swagger.json"
    doc = mutated(_drop("definitions", "UserInput", "properties", "Department", key="maxLength"))
    target.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    errors = [p for p in certification.check_all(target, certification.PROPERTIES_PATH) if p.severity == "error"]
    assert [(p.rule, p.where) for p in errors] == [("StringWithoutMaxLength", "definitions/UserInput Department")]


def _limits_page() -> dict[tuple[str, str], tuple[int, str]]:
    """(section, path) -> (limit, reason) from the tables of docs/limits.md."""
    rows: dict[tuple[str, str], tuple[int, str]] = {}
    chapter = heading = ""
    for line in LIMITS_PAGE.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            chapter, heading = line[3:].strip(), ""
        elif line.startswith("### "):
            heading = line[4:].strip()
        row = re.fullmatch(r"\| `([^`]+)` \| ([\d,]+)(?: items| properties)? \| (.*) \|", line)
        if not row:
            continue
        section = {
            "Parameters": "parameters",
            "Response headers": "response headers",
            "Operation bodies": heading,
            "Definitions": f"definitions/{heading}",
        }[chapter]
        assert (section, row[1]) not in rows, f"{section} {row[1]} is listed twice"
        rows[(section, row[1])] = (int(row[2].replace(",", "")), row[3].strip())
    return rows


def test_limits_page_gives_every_limit_and_its_reason() -> None:
    """docs/limits.md lists each declared limit once, with the document's value and a reason."""
    declared: dict[tuple[str, str], set[int | None]] = {}
    for node in certification.limit_nodes(DEFINITION):
        declared.setdefault((node.section, node.path), set()).add(node.limit)
    page = _limits_page()
    assert sorted(set(declared) - set(page)) == [], "limits missing from docs/limits.md"
    assert sorted(set(page) - set(declared)) == [], "docs/limits.md lists values the document does not have"
    for key, limits in declared.items():
        assert limits == {page[key][0]}, f"{key}: the document says {limits}, docs/limits.md {page[key][0]}"
        assert len(page[key][1]) >= 10, f"{key}: give a reason"


@pytest.mark.parametrize(("request_body", "entity"), list(ROUND_TRIPS.items()))
def test_request_limits_fit_the_response_and_patches_take_what_was_read(request_body: str, entity: str) -> None:
    """A value accepted in a body fits its response's limit, and a PATCH accepts any value a response returned."""
    definitions = DEFINITION["definitions"]
    sent = certification.flatten_schema(DEFINITION, definitions[request_body])
    returned = certification.flatten_schema(DEFINITION, definitions[entity])
    shared = [p for p in sent if p in returned and sent[p]["type"] == returned[p]["type"] == "string"]
    assert len(shared) >= 8, shared
    for path in shared:
        accepted, answered = sent[path]["node"]["maxLength"], returned[path]["node"]["maxLength"]
        assert accepted <= answered, f"{request_body}.{path} accepts {accepted}, {entity} declares {answered}"
        if request_body.endswith("Changes"):
            assert accepted == answered, f"{request_body}.{path} refuses a {entity}.{path} of {answered}"


# --------------------------------------------------------------------------------------------- connexion


class _AnyFunction(Resolver):
    """Resolves every operationId to the same stub, so only the document itself is under test."""

    def resolve_function_from_operation_id(self, operation_id: str) -> Callable[..., Any]:
        return lambda *args, **kwargs: None


def test_connexion_loads_the_document_and_routes_its_paths() -> None:
    """connexion 3 accepts the document as it is and routes its paths (basic_auth then answers 401)."""
    app = connexion.FlaskApp(__name__)
    app.add_api(certification.DEFINITION_PATH, resolver=_AnyFunction())
    with app.test_client() as client:
        assert client.get("/odata/v2/Courses").status_code == 401
        assert client.patch("/odata/v2/Courses('abc')", json={}).status_code == 401
        assert client.post("/webhooks/subscribe/CourseCompleted", json={}).status_code == 401
        assert client.get("/odata/v2/Nothing/Here").status_code == 404
