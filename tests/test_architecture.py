"""Dependencies point inward: connector -> webhooks, calendars -> storage; storage, webhooks and calendars never
import upward, and webhooks and calendars never import each other (what both need lives in storage: the outbound
HTTP guard, leases, the event-log consumer step). certification (the offline checks and export behind `coursewire
check` and `export-connector`) stands apart: it imports none of coursewire's server packages, and connector's CLI
imports it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WEB = {"flask", "connexion", "starlette", "werkzeug", "uvicorn", "aiohttp"}
FORBIDDEN = {
    "storage": {"connector", "webhooks", "calendars", "flask", "connexion", "starlette", "werkzeug"},
    "webhooks": {"connector", "calendars", "flask", "connexion", "starlette", "werkzeug"},
    # The calendar mirror uses storage and third-party libraries (its pages included), never its neighbours.
    "calendars": {"connector", "webhooks"},
    "certification": {"connector", "webhooks", "storage", "calendars", *WEB},
    # The connector files' folder (installed as coursewire_openapi) is data: it imports nothing at all.
    "openapi": {"connector", "webhooks", "storage", "calendars", "certification", *WEB},
}
# Packages written to the "no module over about 400 lines" rule from the start.
SMALL_MODULES = ("certification", "connector/cli")


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_upward(package: str) -> None:
    """No module of `package` imports a package above it or the web framework."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
        if imported_packages(path) & FORBIDDEN[package]
    }
    assert offenders == {}


def test_the_scan_sees_imports() -> None:
    """The scanner itself finds an upward import, so the check above can fail."""
    sample = ROOT / "connector" / "app.py"
    assert {"storage", "connexion"} <= imported_packages(sample)


def test_the_cli_runs_certification() -> None:
    """`coursewire check` and `export-connector` come from the certification package, not from the edge."""
    assert "certification" in imported_packages(ROOT / "connector" / "cli" / "certify.py")
    assert not (ROOT / "connector" / "contract.py").exists()


@pytest.mark.parametrize("package", SMALL_MODULES)
def test_modules_stay_small(package: str) -> None:
    """No module of `package` grows past about 400 lines."""
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in (ROOT / package).rglob("*.py")}
    assert sizes and {path: n for path, n in sizes.items() if n > 400} == {}
