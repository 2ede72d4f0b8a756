"""Check a stream of entities and relationships against a data model, and encode it.

Checking and encoding are one pass: each attribute assignment is looked up once, by
entity type and attribute id, in a table built from the data model that holds both
its declared value class and its JSON text up to the value. The output is
byte-for-byte the JSON text that ``elimity_insights_client.Client.reload_domain_graph``
compresses (simplejson's defaults: ``", "`` and ``": "`` separators, ASCII escapes,
keys in the client's order), produced incrementally so that memory does not grow with
the snapshot.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii as _quote

from elimity_insights_client import (
    AttributeAssignment,
    BooleanValue,
    DateTime,
    DateTimeValue,
    DateValue,
    Entity,
    NumberValue,
    Relationship,
    StringValue,
    TimeValue,
    Value,
)

from elimity_scim.connector.contract import Item
from elimity_scim.connector.errors import SnapshotError

_VALUE_CLASSES: dict[str, type] = {
    "boolean": BooleanValue,
    "date": DateValue,
    "dateTime": DateTimeValue,
    "number": NumberValue,
    "string": StringValue,
    "time": TimeValue,
}
_BATCH = 512

# attribute id -> (declared value class, JSON text of the assignment up to its value)
_Templates = dict[str, tuple[type, str]]


@dataclass
class SnapshotCounts:
    """How many entities and relationships of each type a snapshot holds."""

    entities: Counter[str] = field(default_factory=Counter)
    relationships: Counter[tuple[str, str]] = field(default_factory=Counter)

    def describe(self, data_model: Mapping[str, object]) -> str:
        """Return a one-line summary using the data model's plural names."""
        plurals = _plurals(data_model)
        parts = [f"{self.entities[t]} {plural}" for t, plural in plurals.items()]
        total = sum(self.relationships.values())
        kinds = ", ".join(
            f"{f}→{t} {n}" for (f, t), n in sorted(self.relationships.items())
        )
        rels = f"{total} relationships" + (f" ({kinds})" if kinds else "")
        return ", ".join([*parts, rels]) if parts else f"no entities, {rels}"


class SnapshotValidator:
    """Checks each entity and relationship against a data model, and encodes it."""

    def __init__(self, data_model: Mapping[str, object]) -> None:
        self.counts = SnapshotCounts()
        self._entity_templates = _templates(
            data_model, "entityAttributeTypes", ("entityTypeId",)
        )
        self._relationship_templates = _templates(
            data_model, "relationshipAttributeTypes", ("parentType", "childType")
        )
        # declared (from type, to type) -> the end of a relationship's JSON text
        self._relationship_types = {
            pair: f'"fromEntityType": {_quote(pair[0])}, '
            f'"toEntityType": {_quote(pair[1])}}}'
            for pair in (
                (str(r.get("fromEntityTypeId")), str(r.get("toEntityTypeId")))
                for r in _objects(data_model, "relationshipTypes")
            )
        }
        self._ids: dict[str, set[str]] = {
            str(t.get("id")): set() for t in _objects(data_model, "entityTypes")
        }
        self._relationships_started = False

    def entity(self, entity: Entity) -> str:
        """Check one entity, its attributes and that its id is new; return its JSON."""
        if self._relationships_started:
            msg = "an entity came after the first relationship"
            raise SnapshotError(msg)
        ids = self._ids.get(entity.type)
        if ids is None:
            msg = f"entity {entity.id!r} has undeclared type {entity.type!r}"
            raise SnapshotError(msg)
        if not isinstance(entity.id, str) or not entity.id:
            msg = f"a {entity.type} entity has an empty or non-string id"
            raise SnapshotError(msg)
        if not isinstance(entity.name, str):
            msg = f"{entity.type} {entity.id!r} has a non-string name"
            raise SnapshotError(msg)
        if entity.id in ids:
            msg = f"{entity.type} {entity.id!r} appears twice"
            raise SnapshotError(msg)
        templates = self._entity_templates.get(entity.type, {})
        assignments = _assignments(entity, entity.attribute_assignments, templates)
        ids.add(entity.id)
        self.counts.entities[entity.type] += 1
        return (
            f'{{"attributeAssignments": [{assignments}], "id": {_quote(entity.id)}, '
            f'"name": {_quote(entity.name)}, "type": {_quote(entity.type)}}}'
        )

    def relationship(self, relationship: Relationship) -> str:
        """Check one relationship's type, endpoints and attributes; return its JSON."""
        self._relationships_started = True
        from_id, to_id = relationship.from_entity_id, relationship.to_entity_id
        pair = (relationship.from_entity_type, relationship.to_entity_type)
        suffix = self._relationship_types.get(pair)
        if suffix is None:
            msg = f"{_describe(relationship)} has an undeclared type"
            raise SnapshotError(msg)
        if from_id not in self._ids[pair[0]]:
            what = _describe(relationship)
            msg = f"{what} starts at an entity the snapshot does not hold"
            raise SnapshotError(msg)
        if to_id not in self._ids[pair[1]]:
            what = _describe(relationship)
            msg = f"{what} ends at an entity the snapshot does not hold"
            raise SnapshotError(msg)
        templates = self._relationship_templates.get(pair, {})
        assignments = _assignments(
            relationship, relationship.attribute_assignments, templates
        )
        self.counts.relationships[pair] += 1
        return (
            f'{{"attributeAssignments": [{assignments}], '
            f'"fromEntityId": {_quote(from_id)}, "toEntityId": {_quote(to_id)}, '
            f"{suffix}"
        )

    def item(self, item: Item) -> str:
        """Check and encode an entity or a relationship."""
        if isinstance(item, Entity):
            return self.entity(item)
        return self.relationship(item)


def validated(items: Iterable[Item], validator: SnapshotValidator) -> Iterator[Item]:
    """Pass items through, checking each one first."""
    for item in items:
        validator.item(item)
        yield item


def encode_snapshot(
    items: Iterable[Item], write: Callable[[str], object], validator: SnapshotValidator
) -> None:
    """Check and write the snapshot JSON text for entities, then relationships."""
    write('{"entities": [')
    in_entities = True
    batch: list[str] = []
    first = True
    entity, relationship = validator.entity, validator.relationship
    for item in items:
        if isinstance(item, Entity):
            batch.append(entity(item))
        else:
            if in_entities:
                first = _flush(batch, write, first=first)
                write('], "relationships": [')
                in_entities, first = False, True
            batch.append(relationship(item))
        if len(batch) >= _BATCH:
            first = _flush(batch, write, first=first)
    _flush(batch, write, first=first)
    if in_entities:
        write('], "relationships": [')
    write("]}")


def _flush(batch: list[str], write: Callable[[str], object], *, first: bool) -> bool:
    if not batch:
        return first
    text = ", ".join(batch)
    write(text if first else ", " + text)
    batch.clear()
    return False


def _assignments(
    owner: Item, assignments: Iterable[AttributeAssignment], templates: _Templates
) -> str:
    parts = []
    attributes = []
    for assignment in assignments:
        attribute = assignment.attribute_type_id
        template = templates.get(attribute)
        if template is None:
            msg = f"{_describe(owner)} assigns undeclared attribute {attribute!r}"
            raise SnapshotError(msg)
        attributes.append(attribute)
        value_class, prefix = template
        value = assignment.value
        if type(value) is not value_class:
            text = None
        elif value_class is StringValue:  # the common case, without a call
            raw = value.value  # type: ignore[union-attr]
            text = _quote(raw) if type(raw) is str else None
        elif value_class is DateTimeValue:
            text = _date_time(value.value)  # type: ignore[union-attr,arg-type]
        else:
            text = _value_text(value)
        if text is None:
            kind = prefix.rpartition('"type": "')[2].partition('"')[0]
            msg = f"{_describe(owner)} has an invalid {kind} value for {attribute!r}"
            raise SnapshotError(msg)
        parts.append(f"{prefix}{text}}}}}")
    if len(set(attributes)) < len(attributes):
        twice = next(a for a in attributes if attributes.count(a) > 1)
        msg = f"{_describe(owner)} assigns attribute {twice!r} twice"
        raise SnapshotError(msg)
    return ", ".join(parts)


def _describe(item: Item) -> str:
    # Only for error messages: built when something is wrong, not for every item.
    if isinstance(item, Entity):
        return f"{item.type} {item.id!r}"
    return (
        f"relationship {item.from_entity_type} {item.from_entity_id!r} → "
        f"{item.to_entity_type} {item.to_entity_id!r}"
    )


def _value_text(value: Value) -> str | None:
    # Boolean, number, date and time values (strings and date-times, the common
    # ones, are written by _assignments itself); None for what the type forbids.
    if isinstance(value, BooleanValue):
        return _boolean(value.value)
    if isinstance(value, NumberValue):
        return _number(value.value)
    if isinstance(value, DateValue):
        return _date(value.year, value.month, value.day)
    if isinstance(value, TimeValue):
        return _time(value.hour, value.minute, value.second)
    return None


def _boolean(value: object) -> str | None:
    if value is True:
        return "true"
    return "false" if value is False else None


def _number(value: object) -> str | None:
    # The same text json.dumps gives: int.__repr__ or float.__repr__, no NaN or ±Inf.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return int.__repr__(value) if isinstance(value, int) else float.__repr__(value)


def _date_time(value: DateTime) -> str | None:
    # One value per user and timestamp: checked and written in one go.
    year, month, day = value.year, value.month, value.day
    hour, minute, second = value.hour, value.minute, value.second
    if not (
        type(year) is int
        and type(month) is int
        and type(day) is int
        and type(hour) is int
        and type(minute) is int
        and type(second) is int
        and 1 <= year <= 9999
        and 1 <= month <= 12
        and 1 <= day <= 31
        and 0 <= hour <= 23
        and 0 <= minute <= 59
        and 0 <= second <= 60
    ):
        return None
    return (
        f'{{"year": {year}, "month": {month}, "day": {day}, '
        f'"hour": {hour}, "minute": {minute}, "second": {second}}}'
    )


def _date(year: object, month: object, day: object) -> str | None:
    if not (_int_in(year, 1, 9999) and _int_in(month, 1, 12) and _int_in(day, 1, 31)):
        return None
    return f'{{"year": {year}, "month": {month}, "day": {day}}}'


def _time(hour: object, minute: object, second: object) -> str | None:
    if not (_int_in(hour, 0, 23) and _int_in(minute, 0, 59) and _int_in(second, 0, 60)):
        return None
    return f'{{"hour": {hour}, "minute": {minute}, "second": {second}}}'


def _int_in(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _objects(data_model: Mapping[str, object], key: str) -> list[Mapping[str, object]]:
    entries = data_model.get(key, [])
    if not isinstance(entries, list):
        return []
    return [entry for entry in entries if isinstance(entry, dict)]


def _templates(
    data_model: Mapping[str, object], key: str, scope: tuple[str, ...]
) -> dict[tuple[str, ...] | str, _Templates]:
    templates: dict[tuple[str, ...] | str, _Templates] = {}
    for entry in _objects(data_model, key):
        kind = str(entry.get("type"))
        value_class = _VALUE_CLASSES.get(kind)
        if entry.get("archived") is True or value_class is None:
            continue
        owner = tuple(str(entry.get(part)) for part in scope)
        attribute = str(entry.get("id"))
        prefix = (
            f'{{"attributeTypeId": {_quote(attribute)}, '
            f'"value": {{"type": "{kind}", "value": '
        )
        scoped = owner[0] if len(owner) == 1 else owner
        templates.setdefault(scoped, {})[attribute] = (value_class, prefix)
    return templates


def _plurals(data_model: Mapping[str, object]) -> dict[str, str]:
    return {
        str(t.get("id")): str(t.get("plural", t.get("id")))
        for t in _objects(data_model, "entityTypes")
    }
