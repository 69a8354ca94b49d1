"""Export: the two connector files for a tenant's own connector, from the shipped ones, with the tenant's
host and base path and who publishes it (publisher, website, privacy policy, contact, brand colour).

Each value goes where Power Platform reads it: apiProperties.json `publisher`, `stackOwner` and
`iconBrandColor`; the definition's `info.contact` and its `x-ms-connector-metadata` `Website` and
`Privacy policy` entries.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path

from certification.document import Json
from certification.loading import DEFINITION_NAME, PROPERTIES_NAME, shipped_definition, shipped_properties
from certification.placeholders import METADATA_NAMES, option, placeholder_reason
from certification.properties import COLOR_PATTERN, FORBIDDEN_ICON_COLORS, PUBLISHER_PATTERN
from certification.wording import EMAIL_PATTERN, valid_url

HOST_PATTERN = re.compile(
    r"^(?=.{1,253}(?::|$))[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(?::(\d{1,5}))?$"
)
SCHEMA_HOST_PATTERN = re.compile(r"^[^{}/ :\\]+(?::\d+)?$")  # the Power Platform schema's own pattern
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1"})
URL_FIELDS = ("website", "privacy_policy", "contact_url")
COLOR_NAMES = {"#007ee5": "Power Platform's default icon colour", "#ffffff": "white"}


class InvalidOption(ValueError):
    """An export input that cannot go into the connector files. `option` names the export-connector option
    (`--host`, `--publisher`, ...); the message says what is wrong with the value."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


@dataclass(frozen=True)
class Tenant:
    """Who publishes a tenant's connector. Each field is the export-connector option of the same name with
    dashes (`privacy_policy` is `--privacy-policy`); `contact_url` defaults to the website."""

    publisher: str
    website: str
    privacy_policy: str
    contact_name: str
    contact_email: str
    brand_color: str
    contact_url: str | None = None


def checked_tenant(tenant: Tenant) -> Tenant:
    """`tenant` with its values stripped and `contact_url` filled in, once each value is one certification
    accepts and none is a placeholder (see placeholders.py). Raises InvalidOption naming the first bad one."""
    tenant = replace(
        tenant,
        **{f.name: getattr(tenant, f.name).strip() for f in fields(tenant) if getattr(tenant, f.name) is not None},
    )
    if tenant.contact_url is None:
        tenant = replace(tenant, contact_url=tenant.website)
    for field in fields(tenant):
        name, value = field.name, str(getattr(tenant, field.name))
        if not value:
            raise InvalidOption(option(name), "give a value; it may not be empty")
        if name == "publisher" and not PUBLISHER_PATTERN.fullmatch(value):
            raise InvalidOption(
                option(name),
                f"{value!r} must be words of letters and digits, one space between them (certification's rule)",
            )
        if name in URL_FIELDS and not valid_url(value):
            raise InvalidOption(option(name), f"{value!r} is not an http(s) URL with a host")
        if name == "contact_email" and not EMAIL_PATTERN.match(value):
            raise InvalidOption(option(name), f"{value!r} is not an e-mail address")
        if name == "brand_color":
            if not COLOR_PATTERN.fullmatch(value):
                raise InvalidOption(option(name), f"{value!r} is not a colour written #rrggbb")
            if value.lower() in FORBIDDEN_ICON_COLORS:
                raise InvalidOption(
                    option(name),
                    f"{value} is {COLOR_NAMES[value.lower()]}, which certification refuses; give your brand's colour",
                )
        reason = placeholder_reason(name, value)
        if reason:
            raise InvalidOption(option(name), f"{value!r} {reason}; give your own")
    return tenant


def checked_host(host: str, base_path: str) -> tuple[str, str]:
    """(host, base path) as the definition writes them, once the host is a host name with an optional port
    and the base path starts with '/' and has no query. Raises InvalidOption (`--host`, `--base-path`)."""
    host = host.strip()
    match = HOST_PATTERN.match(host)
    if not match or not SCHEMA_HOST_PATTERN.match(host):
        raise InvalidOption(
            "--host",
            f"host {host!r} is not valid: give a host name with an optional port, without scheme or path, "
            "for example lms.contoso.com or lms.contoso.com:8443",
        )
    if match.group(1) is not None and not 1 <= int(match.group(1)) <= 65535:
        raise InvalidOption("--host", f"host {host!r}: the port must be between 1 and 65535")
    base_path = base_path.strip() or "/"
    if not base_path.startswith("/") or any(c in base_path for c in "?#{} \\"):
        raise InvalidOption(
            "--base-path",
            f"base path {base_path!r} is not valid: it starts with '/' and has no query, for example /lms",
        )
    return host, base_path.rstrip("/") if len(base_path) > 1 else base_path


def connector_files(host: str, base_path: str, tenant: Tenant) -> tuple[Json, Json]:
    """(definition, properties) for the tenant: copies of the shipped files with host, base path, schemes
    and the tenant's values written in. Raises InvalidOption as checked_host and checked_tenant do."""
    host, base_path = checked_host(host, base_path)
    tenant = checked_tenant(tenant)
    definition = copy.deepcopy(shipped_definition())
    definition["host"] = host
    definition["basePath"] = base_path
    definition["schemes"] = ["http"] if host.rsplit(":", 1)[0].lower() in LOOPBACK_HOSTS else ["https"]
    definition.setdefault("info", {})["contact"] = {
        "name": tenant.contact_name,
        "url": tenant.contact_url,
        "email": tenant.contact_email,
    }
    metadata = definition.setdefault("x-ms-connector-metadata", [])
    for field, name in METADATA_NAMES.items():
        entry = next((e for e in metadata if e.get("propertyName") == name), None)
        if entry is None:
            entry = {"propertyName": name}
            metadata.append(entry)
        entry["propertyValue"] = getattr(tenant, field)
    properties = copy.deepcopy(shipped_properties())
    props = properties.setdefault("properties", {})
    props["publisher"] = props["stackOwner"] = tenant.publisher
    props["iconBrandColor"] = tenant.brand_color
    return definition, properties


def export_connector(host: str, base_path: str, out_dir: Path, tenant: Tenant) -> list[Path]:
    """Write apiDefinition.swagger.json and apiProperties.json for the tenant into `out_dir` (created when
    missing) and return their paths.

    Schemes become ["http"] for localhost or 127.0.0.1 and ["https"] otherwise; the stack owner is the
    publisher. Raises InvalidOption, before writing anything, when an input is not valid or is a placeholder.
    """
    definition, properties = connector_files(host, base_path, tenant)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in ((DEFINITION_NAME, definition), (PROPERTIES_NAME, properties)):
        target = out_dir / name
        target.write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(target)
    return written
