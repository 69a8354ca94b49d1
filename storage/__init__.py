"""SQLite storage: schema and migrations, transactions, domain verbs and the event log.

This package imports nothing from `connector` or `webhooks`.
"""
