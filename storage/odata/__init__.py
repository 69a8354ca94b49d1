"""OData over SQLite: entity definitions, `$filter`/`$orderby` compiled to parameterized SQL, read models,
and keyset paging.

`MODEL` (storage.odata.entities) holds one definition per entity set (storage.odata.model types): walk
`MODEL.entity_sets` (name, type_name, key, properties, navigations) and `MODEL.complex_types`.
"""

from __future__ import annotations

from storage.odata.entities import MODEL
from storage.odata.model import (
    BOOLEAN,
    DATETIME,
    DOUBLE,
    GUID,
    INT32,
    INT64,
    PRIMITIVES,
    STRING,
    ComplexType,
    EntitySet,
    Model,
    Navigation,
    Property,
    ReadContext,
)

__all__ = [
    "BOOLEAN",
    "DATETIME",
    "DOUBLE",
    "GUID",
    "INT32",
    "INT64",
    "MODEL",
    "PRIMITIVES",
    "STRING",
    "ComplexType",
    "EntitySet",
    "Model",
    "Navigation",
    "Property",
    "ReadContext",
]
