"""Certification rules for apiProperties.json: its schema, the icon colour, publisher and stack owner,
capabilities, and how its connection parameters and policies fit the definition."""

from __future__ import annotations

import re
from typing import Any

from certification.document import Json, Problem, Report, as_dict, guarded, list_operations, pointer
from certification.loading import validator
from certification.placeholders import warn_placeholder
from certification.schemas import schema_message

# Power Platform's default icon colour and white are refused for certified connectors.
FORBIDDEN_ICON_COLORS = frozenset({"#007ee5", "#ffffff"})
# "Alphanumeric" as certified connectors use it: words of letters and digits (LMS365's has a space).
PUBLISHER_PATTERN = re.compile(r"[A-Za-z0-9]+(?: [A-Za-z0-9]+)*")
COLOR_PATTERN = re.compile(r"#[0-9a-fA-F]{6}")
CAPABILITIES = frozenset({"actions", "triggers"})


def check_properties(doc: Json, definition: Json | None = None) -> list[Problem]:
    """Check an apiProperties.json document; return every problem found (empty when it passes).

    With `definition`, also check that the connection parameters fit its security scheme and that
    pageable operations have the `updatenextlink` policy.
    """
    report = Report()
    for err in validator("properties-schema").iter_errors(doc):
        report.error("Schema", pointer(list(err.absolute_path)), schema_message(err))
    properties = as_dict(as_dict(doc).get("properties"))
    color = properties.get("iconBrandColor")
    if not isinstance(color, str):
        report.error("IconBrandColorMissing", "properties.iconBrandColor", "set the brand color of the icon")
    elif not COLOR_PATTERN.fullmatch(color):
        report.error("IconBrandColorNotValid", "properties.iconBrandColor", f"{color!r} is not a #rrggbb color")
    elif color.lower() in FORBIDDEN_ICON_COLORS:
        report.error(
            "IconBrandColorNotAllowed",
            "properties.iconBrandColor",
            f"{color} is reserved; pick your brand color",
        )
    else:
        warn_placeholder(report, "brand_color", color)
    for key in ("publisher", "stackOwner"):
        value = properties.get(key)
        if not isinstance(value, str) or not value.strip():
            report.error("PublisherMissing", f"properties.{key}", f"certified connectors need {key}")
        elif not PUBLISHER_PATTERN.fullmatch(value):
            report.error("PublisherNotAlphanumeric", f"properties.{key}", f"{value!r} must be letters and digits")
        else:
            warn_placeholder(report, "publisher", value, f"properties.{key}")
    for capability in properties.get("capabilities") or []:
        if capability not in CAPABILITIES:
            report.warn("CapabilityNotValid", "properties.capabilities", f"{capability!r} is not actions or triggers")
    if isinstance(definition, dict):
        guarded(report, "properties and definition", lambda: _check_against_definition(properties, definition, report))
    return report.problems


def _check_against_definition(properties: dict[str, Any], definition: dict[str, Any], report: Report) -> None:
    parameters = properties.get("connectionParameters") or {}
    schemes = definition.get("securityDefinitions") or {}
    if any(isinstance(s, dict) and s.get("type") == "basic" for s in schemes.values()):
        for name in ("username", "password"):
            if (parameters.get(name) or {}).get("type") not in ("string", "securestring"):
                report.error(
                    "BasicAuthParameterMissing",
                    f"properties.connectionParameters.{name}",
                    "basic authentication needs username and password connection parameters",
                )
    next_links = {
        str(op.node["x-ms-pageable"].get("nextLinkName"))
        for op in list_operations(definition)
        if isinstance(op.node.get("x-ms-pageable"), dict)
    }
    rewritten = {
        (policy.get("parameters") or {}).get("x-ms-apimTemplateParameter.nextLinkPropertyName")
        for policy in properties.get("policyTemplateInstances") or []
        if isinstance(policy, dict) and policy.get("templateId") == "updatenextlink"
    }
    for name in sorted(next_links - rewritten):
        report.warn(
            "UpdateNextLinkPolicyMissing",
            "properties.policyTemplateInstances",
            f"pageable operations use {name!r}: add the updatenextlink policy so the platform rewrites it",
        )
