"""Fixtures of the calendar tests: each provider's env (tests/mirror/contract.py `ProviderEnv`), imported here
so every test module of this folder has them (pytest_plugins is only allowed in the top-level conftest)."""

from google_support import google_env  # noqa: F401
from graph_support import graph_env, graph_fake  # noqa: F401
from radicale_support import caldav_env, radicale  # noqa: F401
