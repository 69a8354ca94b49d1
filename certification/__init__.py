"""Offline certification of the connector files, and their export for a tenant's own connector.

`coursewire check` and `coursewire export-connector` run on this package; it imports nothing of coursewire's
server (connector, webhooks, storage). Its modules:

- loading.py: where the shipped files are, reading a file with a clear error, the vendored JSON schemas;
- document.py: Problem, Report and walking a Swagger 2.0 document;
- schemas.py: Power Platform's JSON schemas and the rules on each schema object;
- definition.py, operations.py, triggers.py, wording.py: the certification rules for the definition;
- properties.py: the rules for apiProperties.json;
- limits.py: every value declares its limit;
- superset.py: the certified LMS365 connector's contract is kept;
- placeholders.py and export.py: the tenant's own values, and the files written with them.
"""

from __future__ import annotations

from pathlib import Path

from certification.definition import MAX_FILE_BYTES, check_definition
from certification.document import METHODS, Problem, Report, flatten_schema, guarded
from certification.export import InvalidOption, Tenant, connector_files, export_connector
from certification.limits import LimitNode, check_limits, limit_nodes
from certification.loading import (
    DEFINITION_PATH,
    DEFINITION_SCHEMA,
    PROPERTIES_PATH,
    PROPERTIES_SCHEMA,
    VENDORED_DIR,
    UnreadableFile,
    load_json,
    reference_file,
)
from certification.properties import check_properties
from certification.superset import FORMAT_EXCEPTIONS, check_superset

__all__ = [
    "DEFINITION_PATH",
    "DEFINITION_SCHEMA",
    "FORMAT_EXCEPTIONS",
    "MAX_FILE_BYTES",
    "METHODS",
    "PROPERTIES_PATH",
    "PROPERTIES_SCHEMA",
    "VENDORED_DIR",
    "InvalidOption",
    "LimitNode",
    "Problem",
    "Tenant",
    "UnreadableFile",
    "check_all",
    "check_definition",
    "check_limits",
    "check_properties",
    "check_superset",
    "connector_files",
    "export_connector",
    "flatten_schema",
    "limit_nodes",
    "load_json",
    "reference_file",
]


def check_all(definition_path: Path = DEFINITION_PATH, properties_path: Path | None = PROPERTIES_PATH) -> list[Problem]:
    """Run every check on a definition and its apiProperties.json (the shipped ones by default; None checks
    the definition alone): certification rules, declared limits and the LMS365 superset. Returns the problems.

    Both files are read before anything is checked. Raises UnreadableFile when one is missing, unreadable,
    not UTF-8 or not JSON.
    """
    definition = load_json(definition_path)
    properties = load_json(properties_path) if properties_path is not None else None
    problems = check_definition(definition, size=definition_path.stat().st_size)
    if properties_path is not None:
        problems += check_properties(properties, definition)
    if isinstance(definition, dict):  # check_definition has reported one that is not
        report = Report()
        guarded(report, "declared limits", lambda: report.problems.extend(check_limits(definition)))
        lms365 = load_json(reference_file("lms365"))
        guarded(report, "LMS365 superset", lambda: report.problems.extend(check_superset(definition, lms365)))
        problems += report.problems
    return problems
