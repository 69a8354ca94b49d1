"""Fixtures of the calendar tests: each provider's env (tests/calendars/contract.py `ProviderEnv`)."""

pytest_plugins = ["radicale_support"]
