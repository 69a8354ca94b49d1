"""Webhook triggers: the subscription registry (and, with issue 3, delivery)."""
