"""The connector files: `apiDefinition.swagger.json` (the one document the server serves and Power Platform
imports), `apiProperties.json` (its connection parameters and publisher) and, in `schemas/`, the vendored
Power Platform schemas and certified LMS365 definition that `coursewire check` compares them with.

This folder is installed as the package `coursewire_openapi` (pyproject.toml maps it; a top-level `openapi`
would collide with the PyPI distribution of that name). Code finds these files through
`importlib.resources.files("coursewire_openapi")`, never through paths relative to the checkout, so a wheel
install finds them where an editable one does.
"""
