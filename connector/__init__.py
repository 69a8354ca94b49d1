"""The HTTP edge: connexion app, auth, throttling, OData, handlers and the command line."""
