"""The README stays true: every setting the code reads is in its configuration table with its real default,
and the limits it states are the ones the code enforces."""

from __future__ import annotations

import re
from pathlib import Path

from connector.edge import MULTIPART_OVERHEAD
from connector.settings import Settings
from connector.validation import MAX_DEPTH, MAX_VALUES, OFFLOAD_BYTES

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _code_settings() -> set[str]:
    names: set[str] = set()
    for package in ("connector", "webhooks", "storage", "calendars"):
        for path in (ROOT / package).rglob("*.py"):
            names |= set(re.findall(r"COURSEWIRE_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_])", path.read_text()))
    return names


def _table_rows() -> dict[str, str]:
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return {m[1]: m[2] for m in re.finditer(r"^\| `(COURSEWIRE_[A-Z0-9_]+)` \| ([^|]*) \|", section, re.M)}


def test_every_setting_the_code_reads_is_documented() -> None:
    """A COURSEWIRE_* variable the code reads but the README's configuration table lacks is a hidden setting."""
    missing = sorted(_code_settings() - set(_table_rows()))
    assert missing == []


def test_documented_defaults_are_the_real_ones() -> None:
    """The defaults the configuration table states for the limits are the defaults Settings has."""
    rows = _table_rows()
    defaults = Settings()
    assert rows["COURSEWIRE_MAX_JSON_BYTES"].startswith(f"`{defaults.max_json_bytes}`")
    assert rows["COURSEWIRE_MAX_UPLOAD_BYTES"].startswith(f"`{defaults.max_upload_bytes}`")
    assert rows["COURSEWIRE_PAGE_SIZE"].startswith(f"`{defaults.page_size}`")
    proxies = ",".join(str(n).replace("/128", "") for n in defaults.trusted_proxies)
    assert rows["COURSEWIRE_TRUSTED_PROXIES"].startswith(f"`{proxies}`")


def test_the_security_section_states_the_enforced_limits() -> None:
    """The limits table names the nesting bound, the upload framing and the offload threshold the code uses."""
    security = README.split("## Security", 1)[1].split("\n## ", 1)[0]
    assert f"{MAX_DEPTH} levels" in security
    assert f"{MAX_VALUES:,} values" in security
    assert f"{MULTIPART_OVERHEAD // 1024} KiB framing" in security
    assert f"larger than {OFFLOAD_BYTES // 1024} KiB" in security
    assert f"at most {Settings().max_page_size}" in security
