"""The HTTP edge: connexion app, auth, throttling, OData, handlers and the command line."""

import warnings

# connexion 3.3 imports starlette's test client at import time, which warns about httpx on every
# server start; nothing in coursewire uses it, so the warning is only noise in the server's output.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
