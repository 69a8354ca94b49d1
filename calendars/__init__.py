"""The ILT calendar mirror: every session a person is registered to, or teaches, as events in their connected
calendar (Microsoft 365, Google, CalDAV), or as iMIP e-mails when they have none. See docs/design.md,
"Calendar mirror"."""
