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


def _watched(name: str, type_: str, column: str) -> Property:
    """A value of the connection's watch row; null (left out) while it has none."""
    return Property(name, type_, nullable=True, sql=f"{{t}}_watch.{column}", joins=("watch",))


# Keyed by UserId, a person has one active connection; a disconnected one waiting for the worker to remove its
# events (state 'removing') is no longer theirs and has no key, so no read by key or list ever sees it.
CALENDAR_CONNECTIONS = EntitySet(
    name="CalendarConnections",
    type_name="CalendarConnection",
    key=("UserId",),
    table="calendar_connections",
    # The connection's watch row (storage.calendar_watch), if the worker watches it yet: at most one per connection.
    joins={"watch": "LEFT JOIN calendar_watches {t}_watch ON {t}_watch.connection_id = {t}.id"},
    default_order="{t}.connected_at",
    live="{t}.state = 'active'",
    properties=(
        Property("UserId", GUID, sql="CASE WHEN {t}.state = 'active' THEN {t}.user_id END"),
        col("Provider", STRING, "provider", nullable=True),
        col("Account", STRING, "account", nullable=True),
        col("Calendar", STRING, "calendar", nullable=True),
        flag("SyncEnabled", "sync_enabled"),
        Property("Status", STRING, sql=STATUS_SQL),
        col("ConnectedAt", DATETIME, "connected_at", nullable=True),
        col("LastSyncAt", DATETIME, "last_sync_at", nullable=True),
        col("LastError", STRING, "last_error", nullable=True),
        _watched("LastCheckAt", DATETIME, "last_check_at"),
        _watched("LastNotificationAt", DATETIME, "last_notification_at"),
        _watched("SubscriptionExpiresAt", DATETIME, "expires_at"),
        _watched("LastCheckError", STRING, "last_check_error"),
    ),
)
