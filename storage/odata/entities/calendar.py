"""The CalendarConnections entity set: each person's connected calendar, as administrators list them."""

from __future__ import annotations

from storage.odata.entities.common import col, flag
from storage.odata.model import DATETIME, GUID, STRING, EntitySet, Property

# Whether the account owner has the connection's provider enabled (calendar_settings has one row, written on
# the first change; before it, every provider is off).
_PROVIDER_ENABLED = (
    "CASE {t}.provider"
    " WHEN 'Microsoft365' THEN (SELECT microsoft365_enabled FROM calendar_settings WHERE id = 1)"
    " WHEN 'Google' THEN (SELECT google_enabled FROM calendar_settings WHERE id = 1)"
    " WHEN 'CalDAV' THEN (SELECT caldav_enabled FROM calendar_settings WHERE id = 1)"
    " END"
)
# Status as storage.calendar.get_connection shows it: a working connection is Paused while its sync is
# switched off or its provider disabled; NeedsReauthorization and Error are shown as they are, since they
# are what the person has to act on.
STATUS_SQL = (
    "CASE WHEN {t}.status = 'Connected'"
    f" AND ({{t}}.sync_enabled = 0 OR COALESCE({_PROVIDER_ENABLED}, 0) = 0)"
    " THEN 'Paused' ELSE {t}.status END"
)

# Keyed by UserId, a person has one active connection; a disconnected one waiting for the worker to remove its
# events (state 'removing') is no longer theirs and has no key, so no read by key or list ever sees it.
CALENDAR_CONNECTIONS = EntitySet(
    name="CalendarConnections",
    type_name="CalendarConnection",
    key=("UserId",),
    table="calendar_connections",
    default_order="{t}.connected_at",
    live="{t}.state = 'active'",
    properties=(
        Property("UserId", GUID, sql="CASE WHEN {t}.state = 'active' THEN {t}.user_id END"),
        col("Provider", STRING, "provider", nullable=True),
        col("Account", STRING, "account", nullable=True),
        flag("SyncEnabled", "sync_enabled"),
        Property("Status", STRING, sql=STATUS_SQL),
        col("ConnectedAt", DATETIME, "connected_at", nullable=True),
        col("LastSyncAt", DATETIME, "last_sync_at", nullable=True),
        col("LastError", STRING, "last_error", nullable=True),
    ),
)
