"""What a tenant fills in for its own connector (publisher, website, privacy policy, contact, brand colour),
where each value lives in the two files, and how a value that is still a placeholder is recognised.

A placeholder is a value the shipped template already has (the template's values are read from the shipped
files, so this follows them), or a URL or e-mail address under a name reserved for examples and local
use (RFC 2606 and RFC 6761: example.com, .example, .test, .invalid, .localhost; also localhost and .local).
"""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import urlsplit

from certification.document import Json, Report, as_dict
from certification.loading import shipped_definition, shipped_properties

PLACEHOLDER_RULE = "PlaceholderValue"
# Tenant field -> where `coursewire check` reports it. Each field is an `export-connector` option of the
# same name with dashes (`privacy_policy` is --privacy-policy).
FIELDS = {
    "publisher": "properties.publisher",
    "brand_color": "properties.iconBrandColor",
    "website": "x-ms-connector-metadata.Website",
    "privacy_policy": "x-ms-connector-metadata.Privacy policy",
    "contact_name": "info.contact.name",
    "contact_email": "info.contact.email",
    "contact_url": "info.contact.url",
}
METADATA_NAMES = {"website": "Website", "privacy_policy": "Privacy policy"}
RESERVED_DOMAINS = ("example.com", "example.net", "example.org")
RESERVED_SUFFIXES = (".example", ".test", ".invalid", ".localhost", ".local")


def option(field: str) -> str:
    """The export-connector option that sets `field`: `privacy_policy` -> `--privacy-policy`."""
    return "--" + field.replace("_", "-")


def reserved_host(host: str) -> bool:
    """True for a host name (an optional port aside) that names no production server: localhost, loopback
    and unspecified addresses, and names reserved for examples, tests and local networks."""
    name = host.strip().lower().rstrip(".")
    if name.count(":") == 1:
        name = name.split(":", 1)[0]
    return (
        name in ("localhost", "0.0.0.0", "::1", "[::1]")  # noqa: S104 (a name compared, nothing bound)
        or name.startswith("127.")
        or name.endswith(RESERVED_SUFFIXES)
        or any(name == domain or name.endswith("." + domain) for domain in RESERVED_DOMAINS)
    )


def tenant_values(definition: Json, properties: Json) -> dict[str, str]:
    """The tenant fields as two connector files state them (fields they lack, or hold as non-strings, are
    left out). `publisher` is apiProperties' publisher; its stackOwner is reported under the same field."""
    found: dict[str, Any] = {}
    info = as_dict(as_dict(definition).get("info"))
    contact = as_dict(info.get("contact"))
    for key in ("name", "email", "url"):
        found[f"contact_{key}"] = contact.get(key)
    metadata = as_dict(definition).get("x-ms-connector-metadata")
    for entry in metadata if isinstance(metadata, list) else []:
        entry = as_dict(entry)
        for field, name in METADATA_NAMES.items():
            if entry.get("propertyName") == name:
                found[field] = entry.get("propertyValue")
    props = as_dict(as_dict(properties).get("properties"))
    found["publisher"] = props.get("publisher")
    found["brand_color"] = props.get("iconBrandColor")
    return {field: value for field, value in found.items() if isinstance(value, str)}


@cache
def template_values() -> dict[str, frozenset[str]]:
    """Field -> the shipped template's values for it, case-folded (publisher: publisher and stackOwner)."""
    values = {field: {value.strip().casefold()} for field, value in tenant_values(*_shipped()).items()}
    stack_owner = as_dict(as_dict(shipped_properties()).get("properties")).get("stackOwner")
    if isinstance(stack_owner, str):
        values.setdefault("publisher", set()).add(stack_owner.strip().casefold())
    return {field: frozenset(found) for field, found in values.items()}


def _shipped() -> tuple[Json, Json]:
    return shipped_definition(), shipped_properties()


def placeholder_reason(field: str, value: str) -> str | None:
    """Why `value` is a placeholder for the tenant field `field` (a phrase to follow the quoted value), or
    None when it is not one."""
    if value.strip().casefold() in template_values().get(field, frozenset()):
        return "is the shipped template's example value"
    if field == "contact_email":
        host = value.rsplit("@", 1)[-1]
    elif field in ("website", "privacy_policy", "contact_url"):
        host = urlsplit(value.strip()).hostname or ""
    else:
        return None
    if host and reserved_host(host):
        return f"is under {host!r}, a name reserved for examples and local use"
    return None


def warn_placeholder(report: Report, field: str, value: str, where: str | None = None) -> None:
    """Warn (PlaceholderValue) when `value` of `field` is a placeholder, naming the export option to set."""
    reason = placeholder_reason(field, value)
    if reason:
        report.warn(
            PLACEHOLDER_RULE,
            where or FIELDS[field],
            f"{value!r} {reason}; `coursewire export-connector {option(field)}` writes your own",
        )
