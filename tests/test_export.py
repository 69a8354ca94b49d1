"""Export for a tenant's own connector: host, base path and the tenant's publisher, website, privacy policy,
contact and brand colour, written where Power Platform reads them; placeholders refused, naming the option."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

import certification
from certification import InvalidOption, Tenant
from certification.placeholders import reserved_host

TENANT = Tenant(
    publisher="Contoso Learning",
    website="https://www.contoso.com",
    privacy_policy="https://www.contoso.com/privacy",
    contact_name="Contoso IT Service Desk",
    contact_email="lms-support@contoso.com",
    brand_color="#0B5CAD",
)
TEMPLATE = certification.load_json(certification.DEFINITION_PATH)
TEMPLATE_PROPERTIES = certification.load_json(certification.PROPERTIES_PATH)
TEMPLATE_CONTACT = TEMPLATE["info"]["contact"]
TEMPLATE_METADATA = {e["propertyName"]: e["propertyValue"] for e in TEMPLATE["x-ms-connector-metadata"]}


def export(tmp_path: Path, host: str = "lms.contoso.com", base_path: str = "/", **changes: str) -> list[Path]:
    return certification.export_connector(host, base_path, tmp_path / "out", dataclasses.replace(TENANT, **changes))


def metadata(definition: dict[str, Any]) -> dict[str, str]:
    return {e["propertyName"]: e["propertyValue"] for e in definition["x-ms-connector-metadata"]}


def test_export_writes_files_for_the_host_that_pass_every_check(tmp_path: Path) -> None:
    """export-connector sets host, basePath and https, and the two files pass every check (`coursewire check`
    on them) with none of the template's placeholders left and no warning the template alone has."""
    written = export(tmp_path, "lms.contoso.com:8443", "/lms/")
    assert [p.name for p in written] == ["apiDefinition.swagger.json", "apiProperties.json"]
    definition = certification.load_json(written[0])
    assert (definition["host"], definition["basePath"], definition["schemes"]) == (
        "lms.contoso.com:8443",
        "/lms",
        ["https"],
    )
    problems = certification.check_all(*written)
    assert [str(p) for p in problems if p.severity == "error"] == []
    assert {p.rule for p in problems} & {"HostNotProduction", "PlaceholderValue"} == set()
    shipped = {p.rule for p in certification.check_all()}
    assert {"HostNotProduction", "PlaceholderValue"} <= shipped  # so the assertion above can fail


def test_tenant_values_go_where_power_platform_reads_them(tmp_path: Path) -> None:
    """publisher and stackOwner, iconBrandColor in apiProperties.json; info.contact and the Website and
    Privacy policy metadata in the definition; the contact URL defaults to the website. Nothing else changes."""
    definition_path, properties_path = export(tmp_path)
    definition = certification.load_json(definition_path)
    properties = certification.load_json(properties_path)
    assert definition["info"]["contact"] == {
        "name": "Contoso IT Service Desk",
        "url": "https://www.contoso.com",
        "email": "lms-support@contoso.com",
    }
    assert metadata(definition) == {
        "Website": "https://www.contoso.com",
        "Privacy policy": "https://www.contoso.com/privacy",
        "Categories": TEMPLATE_METADATA["Categories"],
    }
    assert {k: properties["properties"][k] for k in ("publisher", "stackOwner", "iconBrandColor")} == {
        "publisher": "Contoso Learning",
        "stackOwner": "Contoso Learning",
        "iconBrandColor": "#0B5CAD",
    }
    changed = {"info", "host", "x-ms-connector-metadata", "publisher", "stackOwner", "iconBrandColor"}
    for doc, template in ((definition, TEMPLATE), (properties["properties"], TEMPLATE_PROPERTIES["properties"])):
        assert {k: v for k, v in doc.items() if k not in changed} == {
            k: v for k, v in template.items() if k not in changed
        }
    assert {k: v for k, v in definition["info"].items() if k != "contact"} == {
        k: v for k, v in TEMPLATE["info"].items() if k != "contact"
    }
    with_url = certification.load_json(export(tmp_path, contact_url="https://help.contoso.com/lms")[0])
    assert with_url["info"]["contact"]["url"] == "https://help.contoso.com/lms"


def test_export_for_localhost_uses_http(tmp_path: Path) -> None:
    """A local host is served over plain HTTP, so the exported schemes say http."""
    definition = certification.load_json(export(tmp_path, "127.0.0.1:8365")[0])
    assert (definition["host"], definition["basePath"], definition["schemes"]) == ("127.0.0.1:8365", "/", ["http"])


@pytest.mark.parametrize(
    ("host", "base_path", "option"),
    [
        ("https://lms.contoso.com", "/", "--host"),
        ("lms.contoso.com/lms", "/", "--host"),
        ("", "/", "--host"),
        ("lms contoso.com", "/", "--host"),
        ("lms.contoso.com:99999", "/", "--host"),
        ("lms.contoso.com", "lms", "--base-path"),
        ("lms.contoso.com", "/lms?x=1", "--base-path"),
    ],
)
def test_export_refuses_a_bad_host_or_base_path(tmp_path: Path, host: str, base_path: str, option: str) -> None:
    """A host with a scheme, path or bad port, or a base path without a leading '/', is refused naming the
    option, and nothing is written."""
    with pytest.raises(InvalidOption, match=re.compile(r"host|base path")) as refused:
        export(tmp_path, host, base_path)
    assert refused.value.option == option
    assert not (tmp_path / "out").exists()


PLACEHOLDERS = [
    # The shipped template's own values, whatever their case.
    ("publisher", "coursewire"),
    ("publisher", "COURSEWIRE"),
    ("contact_name", TEMPLATE_CONTACT["name"]),
    ("contact_email", TEMPLATE_CONTACT["email"]),
    ("contact_url", TEMPLATE_CONTACT["url"]),
    ("website", TEMPLATE_METADATA["Website"]),
    ("privacy_policy", TEMPLATE_METADATA["Privacy policy"]),
    ("brand_color", TEMPLATE_PROPERTIES["properties"]["iconBrandColor"].upper()),
    # Names reserved for examples and local use.
    ("website", "https://example.com"),
    ("privacy_policy", "https://www.example.org/privacy"),
    ("contact_url", "http://localhost:8365/help"),
    ("contact_email", "help@lms.example.net"),
    ("contact_email", "it@contoso.test"),
    # Colours certification refuses.
    ("brand_color", "#007ee5"),
    ("brand_color", "#FFFFFF"),
]


@pytest.mark.parametrize(("field", "value"), PLACEHOLDERS)
def test_export_refuses_placeholders_naming_the_option(tmp_path: Path, field: str, value: str) -> None:
    """A value left as the template's example, under a reserved example name, or a colour certification
    refuses, is an InvalidOption naming the export-connector option; nothing is written."""
    with pytest.raises(InvalidOption) as refused:
        export(tmp_path, **{field: value})
    assert refused.value.option == "--" + field.replace("_", "-")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("publisher", "Contoso, Inc.", "letters and digits"),
        ("publisher", "  ", "empty"),
        ("website", "www.contoso.com", "http(s) URL"),
        ("privacy_policy", "ftp://contoso.com/privacy", "http(s) URL"),
        ("contact_email", "lms-support", "e-mail"),
        ("brand_color", "blue", "#rrggbb"),
        ("brand_color", "#0b5cad80", "#rrggbb"),
    ],
)
def test_export_refuses_values_certification_refuses(tmp_path: Path, field: str, value: str, words: str) -> None:
    """A publisher that is not alphanumeric words, a URL that is not http(s), an address that is not one, or
    a colour that is not #rrggbb, is refused with what is wrong."""
    with pytest.raises(InvalidOption, match=re.escape(words)) as refused:
        export(tmp_path, **{field: value})
    assert refused.value.option == "--" + field.replace("_", "-")


def test_real_values_near_the_reserved_names_pass(tmp_path: Path) -> None:
    """Names that only look like the reserved ones (examples.com, testing.org, mylocal.net) are not placeholders."""
    definition = certification.load_json(
        export(
            tmp_path,
            website="https://examples.com",
            privacy_policy="https://testing.org/privacy",
            contact_email="it@mylocal.net",
        )[0]
    )
    assert metadata(definition)["Website"] == "https://examples.com"


@pytest.mark.parametrize(
    ("host", "reserved"),
    [
        ("localhost:8365", True),
        ("127.0.0.2", True),
        ("lms.example.com", True),
        ("example.org", True),
        ("printer.local", True),
        ("lms.test", True),
        ("lms.contoso.com", False),
        ("examples.com", False),
        ("api.365.systems", False),
    ],
)
def test_reserved_hosts(host: str, reserved: bool) -> None:
    """Loopback, example (RFC 2606), test, invalid, localhost and .local names are not production hosts."""
    assert reserved_host(host) is reserved


def test_check_reports_placeholders_in_files_made_by_hand(tmp_path: Path) -> None:
    """`coursewire check` warns (PlaceholderValue) where a file keeps the template's value or a reserved name,
    naming the export option that replaces it; the exported files have none."""
    definition_path, properties_path = export(tmp_path)
    definition = json.loads(definition_path.read_text())
    definition["info"]["contact"]["email"] = "someone@example.com"
    definition_path.write_text(json.dumps(definition))
    properties = json.loads(properties_path.read_text())
    properties["properties"]["stackOwner"] = "coursewire"
    properties_path.write_text(json.dumps(properties))
    found = [(p.rule, p.where, p.severity) for p in certification.check_all(definition_path, properties_path)]
    assert ("PlaceholderValue", "info.contact.email", "warning") in found
    assert ("PlaceholderValue", "properties.stackOwner", "warning") in found
    messages = [p.message for p in certification.check_all(definition_path, properties_path)]
    assert any("export-connector --contact-email" in m for m in messages)
