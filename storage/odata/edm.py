"""The `$metadata` description (storage.odata.csdl) derived from the entity definitions (storage.odata.model).

Derivation rules, beyond names, types, nullability, keys and navigations taken as they are:
- every navigation is bound to its target entity set;
- a value that `$expand` computes (`expand_only`) and that is an object or a list of objects (a course's
  DueDate, Publishing, CertificateExpiry, SharepointWeb, LearningModules, Quizzes) is a *contained*
  navigation (CSDL `ContainsTarget`) to an entity type made of its complex type, keyed by that type's first
  non-nullable single Edm.Guid or Edm.String property. OData clients `$expand` navigations only, and
  `<base>/odata/v2/$metadata#Courses(<id>)/DueDate/$entity`, the context the server (like LMS365) gives such
  a value, names an entity reached through a navigation;
- a computed plain value (ProvisioningProgress) is a structural property;
- the service document lists the sets a client can read whole at `/odata/v2/<name>`: listed ones that do
  not hang under a parent (CourseSessions are listed at `Courses(<id>)/CourseSessions` only).
"""

from __future__ import annotations

from storage.odata import csdl
from storage.odata.model import ComplexType, EntitySet, Model, Property

NAMESPACE = "Coursewire"
CONTAINER = "Container"


def describe(model: Model) -> csdl.Model:
    """The checked CSDL description of `model`; raises csdl.ModelError when a rule above cannot apply
    (a computed object type without a possible key, or one also used as a plain complex value)."""
    computed = {p.type for es in model.entity_sets for p in es.properties if p.expand_only}
    promoted = [c.name for c in model.complex_types if c.name in computed]
    owners: list[ComplexType | EntitySet] = [*model.complex_types, *model.entity_sets]
    for owner in owners:
        for p in owner.properties:
            if p.type in promoted and not p.expand_only:
                raise csdl.ModelError(f"{owner.name}.{p.name}: {p.type} is a value $expand computes elsewhere")
    entity_types = [_entity_type(model, es, promoted) for es in model.entity_sets]
    entity_types += [_contained_type(model, name) for name in promoted]
    complex_types = [
        csdl.ComplexType(c.name, tuple(_property(p) for p in c.properties))
        for c in model.complex_types
        if c.name not in promoted
    ]
    entity_sets = [
        csdl.EntitySet(
            es.name, es.type_name, {n.name: n.target for n in es.navigations}, es.listed and es.parent is None
        )
        for es in model.entity_sets
    ]
    return csdl.Model(NAMESPACE, CONTAINER, tuple(entity_types), tuple(complex_types), tuple(entity_sets)).check()


def _property(p: Property) -> csdl.Property:
    # A plain value that only `$expand` computes (a course's ProvisioningProgress) is absent from lists, so
    # it is nullable for a client: Excel and Power BI show the column empty rather than fail on it.
    return csdl.Property(p.name, p.type, p.nullable or p.expand_only, p.collection)


def _entity_type(model: Model, es: EntitySet, promoted: list[str]) -> csdl.EntityType:
    properties = tuple(_property(p) for p in es.properties if p.type not in promoted)
    contained = tuple(
        csdl.NavigationProperty(p.name, p.type, p.collection, contained=True)
        for p in es.properties
        if p.type in promoted
    )
    bound = tuple(
        csdl.NavigationProperty(n.name, model.entity_set(n.target).type_name, n.many, n.nullable)
        for n in es.navigations
    )
    return csdl.EntityType(es.type_name, es.key, properties, bound + contained)


def _contained_type(model: Model, name: str) -> csdl.EntityType:
    complex_type = model.complex_type(name)
    key = next(
        (
            p.name
            for p in complex_type.properties
            if not p.nullable and not p.collection and p.type in ("Edm.Guid", "Edm.String")
        ),
        None,
    )
    if key is None:
        raise csdl.ModelError(f"{name} is computed by $expand but has no non-nullable Guid or String to key it")
    return csdl.EntityType(name, (key,), tuple(_property(p) for p in complex_type.properties))
