"""CalDAV against a real Radicale: the provider contract, and what only CalDAV has (conditional PUTs, discovery)."""

from __future__ import annotations

from contract import ProviderContract


class TestCalDAVContract(ProviderContract):
    env_fixture = "caldav_env"
