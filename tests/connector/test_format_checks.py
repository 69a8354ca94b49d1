"""Request validation checks the same JSON Schema formats whatever else is installed beside coursewire."""

from __future__ import annotations

import jsonschema
from support import Api, build_world

from connector.bodies import FORMAT_CHECKER


def test_formats_do_not_depend_on_optional_packages(api: Api) -> None:
    """jsonschema checks `date-time` only when rfc3339-validator is importable (the test extra brings it, through
    openapi-spec-validator and bravado, and so may any other package installed beside coursewire); with it, a
    wall-clock session StartDate was a 400 on one install and accepted on another. It is accepted on both now."""
    assert "date-time" in jsonschema.FormatChecker().checkers  # the optional package is here
    assert "date-time" not in FORMAT_CHECKER.checkers
    world = build_world(api)
    moved = api.ok(
        "PATCH",
        f"/odata/v2/CourseSessions({world.session['Id']})",
        json={
            "StartDate": "2030-07-01T09:00:00",
            "EndDate": "2030-07-01T12:00:00",
            "TimeZone": "Romance Standard Time",
        },
    )
    assert moved["StartDate"] == "2030-07-01T07:00:00.000Z"
