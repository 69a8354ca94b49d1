"""Loading: where the shipped connector files are, reading a connector file with an error that says what is
wrong with it, and the Power Platform JSON schemas as validators.

The shipped files are the package data of `coursewire_openapi` (the checkout's openapi/ folder, installed
under that name; see pyproject.toml), found through importlib.resources so a wheel finds them too.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path

import jsonschema

from certification.document import Json

FILES_PACKAGE = "coursewire_openapi"
DEFINITION_NAME = "apiDefinition.swagger.json"
PROPERTIES_NAME = "apiProperties.json"
DEFINITION_SCHEMA = "powerplatform.apiDefinition.schema.json"
PROPERTIES_SCHEMA = "powerplatform.apiProperties.schema.json"
# The certified LMS365 definition, vendored under another name so it is not mistaken for ours.
LMS365_REFERENCE = "lms365.reference.swagger.json"

# A regular package installed as files (pip never installs zipped), so its Traversable is a real path.
SHIPPED_DIR = Path(str(resources.files(FILES_PACKAGE)))
DEFINITION_PATH = SHIPPED_DIR / DEFINITION_NAME
PROPERTIES_PATH = SHIPPED_DIR / PROPERTIES_NAME
VENDORED_DIR = SHIPPED_DIR / "schemas"
REFERENCE_FILES = {
    "definition-schema": DEFINITION_SCHEMA,
    "properties-schema": PROPERTIES_SCHEMA,
    "lms365": LMS365_REFERENCE,
}


class UnreadableFile(Exception):
    """A connector file that cannot be checked: missing, unreadable, not UTF-8 or not JSON.

    `path` is the file; the message says what is wrong, in words a command line can print as they are.
    """

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = message


def load_json(path: Path) -> Json:
    """Parse a JSON file (any JSON value: the checks report a document that is not an object).

    Raises UnreadableFile when the file is missing, is a folder, cannot be read, is not UTF-8 or is not
    JSON (the message names the line and column of the first syntax error).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UnreadableFile(path, "no such file") from None
    except IsADirectoryError:
        raise UnreadableFile(path, "is a folder, not a file") from None
    except PermissionError:
        raise UnreadableFile(path, "permission denied") from None
    except UnicodeDecodeError as exc:
        raise UnreadableFile(path, f"is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise UnreadableFile(path, exc.strerror or str(exc)) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UnreadableFile(path, f"is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None


def reference_file(kind: str) -> Path:
    """The path of a shipped reference file: `definition-schema`, `properties-schema` or `lms365`.

    Raises KeyError for another kind.
    """
    return VENDORED_DIR / REFERENCE_FILES[kind]


@cache
def shipped_definition() -> Json:
    """The shipped apiDefinition.swagger.json, parsed once (treat it as read-only)."""
    return load_json(DEFINITION_PATH)


@cache
def shipped_properties() -> Json:
    """The shipped apiProperties.json, parsed once (treat it as read-only)."""
    return load_json(PROPERTIES_PATH)


@cache
def validator(kind: str) -> jsonschema.protocols.Validator:
    """A validator for `definition-schema` or `properties-schema` (Power Platform's JSON schemas)."""
    schema = load_json(reference_file(kind))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)
