"""Numbers and host names in request text are read the way the document and HTTP define them: ASCII digits only
for integer query options (Python's int() also reads other scripts' digits, `1_0` and blanks), and a Host of DNS
labels with a port from 1 to 65535, by the rule export-connector applies to --host."""

from __future__ import annotations

from typing import Any

import pytest
from support import Api, error

from certification.export import HOST_PATTERN

ARABIC_ONE = "\u0661"  # ARABIC-INDIC DIGIT ONE: int() reads it as 1
FULLWIDTH_ONE = "\uff11"


@pytest.mark.parametrize(
    ("path", "option"),
    [
        (f"/odata/v2/Users?$top={ARABIC_ONE}", "$top"),
        (f"/odata/v2/Users?$skip={ARABIC_ONE}", "$skip"),
        (f"/odata/v2/Courses?$top={FULLWIDTH_ONE}", "$top"),
        ("/odata/v2/Users?$top=1_0", "$top"),
        ("/odata/v2/Users?$top=%201", "$top"),
        (f"/webhooks/deliveries?$top={ARABIC_ONE}{ARABIC_ONE}", "$top"),
    ],
)
def test_an_integer_option_in_another_scripts_digits_is_refused_naming_it(api: Api, path: str, option: str) -> None:
    """`$top=` an Arabic-Indic one was served as `$top=1` (connexion converts integer parameters with int()); now
    it is a 400 naming the option, as `$top=x` is."""
    response = api.get(path)
    assert response.status_code == 400, response.text
    assert error(response)["target"] == option
    assert "digits 0-9" in error(response)["message"]


def test_integer_options_in_ascii_digits_still_work(api: Api) -> None:
    """The options a flow sends keep working: `$top=2`, `$skip=0`, `$top=+1` (int()'s sign), and an empty `$top`."""
    for login in ("ascii1@digits.example", "ascii2@digits.example", "ascii3@digits.example"):
        api.post("/odata/v2/Users", json={"LoginName": login, "Title": login})
    assert len(api.get("/odata/v2/Users?$top=2&$skip=0").json()["value"]) == 2
    assert len(api.get("/odata/v2/Users?$top=%2B1").json()["value"]) == 1
    assert api.get("/webhooks/deliveries?$top=5").status_code == 200


@pytest.mark.parametrize("host", ["x:0", "x:65536", "x:99999", "a..b", "a.", "a..b:8365"])
def test_a_host_with_no_such_port_or_an_empty_label_is_refused_naming_host(api: Api, app: Any, host: str) -> None:
    """Links and /swagger.json were built from such a Host (or /swagger.json quietly left `host` out); both now
    answer 400 naming Host, as export-connector refuses them for --host."""
    response = api.get("/odata/v2/Users", headers={"Host": host})
    assert (response.status_code, error(response)["target"]) == (400, "Host"), response.text
    with app.test_client() as client:
        served = client.get("/swagger.json", headers={"Host": host})
    assert (served.status_code, error(served)["target"]) == (400, "Host"), served.text
    assert not _export_accepts(host)


@pytest.mark.parametrize("host", ["lms.contoso.com", "lms.contoso.com:8443", "127.0.0.1:65535", "x:1", "[::1]:8365"])
def test_ordinary_hosts_are_served(api: Api, host: str) -> None:
    """Names, IPv4 addresses, IPv6 literals and ports 1 to 65535 are served as before."""
    response = api.get("/odata/v2/Users?$top=1", headers={"Host": host})
    assert response.status_code == 200, response.text
    assert host.startswith("[") or _export_accepts(host)


def _export_accepts(host: str) -> bool:
    """Whether export-connector's --host rule (certification.export.checked_host) takes `host`."""
    match = HOST_PATTERN.match(host)
    return bool(match) and (match.group(1) is None or 1 <= int(match.group(1)) <= 65535)
