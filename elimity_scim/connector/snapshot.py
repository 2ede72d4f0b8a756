"""Check a stream of entities and relationships against a data model, and encode it.

The encoding is byte-for-byte the JSON text that
``elimity_insights_client.Client.reload_domain_graph`` compresses (simplejson's
defaults: ``", "`` and ``": "`` separators, ASCII escapes, keys in the client's
order), produced incrementally so that memory does not grow with the snapshot.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

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

_VALUE_TYPES: dict[type, str] = {
    BooleanValue: "boolean",
    DateValue: "date",
    DateTimeValue: "dateTime",
    NumberValue: "number",
    StringValue: "string",
    TimeValue: "time",
}
_BATCH = 512


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
    """Checks each entity and relationship against a data model as it passes."""

    def __init__(self, data_model: Mapping[str, object]) -> None:
        self.counts = SnapshotCounts()
        self._entity_attributes = _attribute_types(
            data_model, "entityAttributeTypes", ("entityTypeId",)
        )
        self._relationship_attributes = _attribute_types(
            data_model, "relationshipAttributeTypes", ("parentType", "childType")
        )
        self._relationship_types = {
            (str(r.get("fromEntityTypeId")), str(r.get("toEntityTypeId")))
            for r in _objects(data_model, "relationshipTypes")
        }
        self._ids: dict[str, set[str]] = {
            str(t.get("id")): set() for t in _objects(data_model, "entityTypes")
        }
        self._relationships_started = False

    def entity(self, entity: Entity) -> None:
        """Check one entity, its attributes and that its id is new."""
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
        what = f"{entity.type} {entity.id!r}"
        declared = self._entity_attributes.get((entity.type,), {})
        _check_assignments(what, entity.attribute_assignments, declared)
        ids.add(entity.id)
        self.counts.entities[entity.type] += 1

    def relationship(self, relationship: Relationship) -> None:
        """Check one relationship's type, endpoints and attributes."""
        self._relationships_started = True
        pair = (relationship.from_entity_type, relationship.to_entity_type)
        what = f"relationship {pair[0]} {relationship.from_entity_id!r} → "
        what += f"{pair[1]} {relationship.to_entity_id!r}"
        if pair not in self._relationship_types:
            msg = f"{what} has an undeclared type"
            raise SnapshotError(msg)
        if relationship.from_entity_id not in self._ids[pair[0]]:
            msg = f"{what} starts at an entity the snapshot does not hold"
            raise SnapshotError(msg)
        if relationship.to_entity_id not in self._ids[pair[1]]:
            msg = f"{what} ends at an entity the snapshot does not hold"
            raise SnapshotError(msg)
        declared = self._relationship_attributes.get(pair, {})
        _check_assignments(what, relationship.attribute_assignments, declared)
        self.counts.relationships[pair] += 1


def validated(items: Iterable[Item], validator: SnapshotValidator) -> Iterator[Item]:
    """Pass items through, checking each one first."""
    for item in items:
        if isinstance(item, Entity):
            validator.entity(item)
        else:
            validator.relationship(item)
        yield item


def encode_snapshot(items: Iterable[Item], write: Callable[[str], object]) -> None:
    """Write the snapshot JSON text for a stream of entities then relationships.

    ``items`` must yield every entity before the first relationship, as
    ``validated`` ensures.
    """
    write('{"entities": [')
    section = "entities"
    batch: list[object] = []
    first = True
    for item in items:
        if isinstance(item, Relationship) and section == "entities":
            first = _flush(batch, write, first=first)
            write('], "relationships": [')
            section, first = "relationships", True
        batch.append(
            entity_json(item) if isinstance(item, Entity) else relationship_json(item)
        )
        if len(batch) >= _BATCH:
            first = _flush(batch, write, first=first)
    _flush(batch, write, first=first)
    if section == "entities":
        write('], "relationships": [')
    write("]}")


def entity_json(entity: Entity) -> dict[str, object]:
    """Return the JSON object the Insights client sends for an entity."""
    return {
        "attributeAssignments": [
            _assignment_json(a) for a in entity.attribute_assignments
        ],
        "id": entity.id,
        "name": entity.name,
        "type": entity.type,
    }


def relationship_json(relationship: Relationship) -> dict[str, object]:
    """Return the JSON object the Insights client sends for a relationship."""
    return {
        "attributeAssignments": [
            _assignment_json(a) for a in relationship.attribute_assignments
        ],
        "fromEntityId": relationship.from_entity_id,
        "toEntityId": relationship.to_entity_id,
        "fromEntityType": relationship.from_entity_type,
        "toEntityType": relationship.to_entity_type,
    }


def _flush(batch: list[object], write: Callable[[str], object], *, first: bool) -> bool:
    if not batch:
        return first
    text = json.dumps(batch, ensure_ascii=True, allow_nan=False)[1:-1]
    write(text if first else ", " + text)
    batch.clear()
    return False


def _assignment_json(assignment: AttributeAssignment) -> dict[str, object]:
    return {
        "attributeTypeId": assignment.attribute_type_id,
        "value": _value_json(assignment.value),
    }


def _value_json(value: Value) -> dict[str, object]:
    if isinstance(value, DateTimeValue):
        return {"type": "dateTime", "value": _date_time_json(value.value)}
    if isinstance(value, DateValue):
        date = {"year": value.year, "month": value.month, "day": value.day}
        return {"type": "date", "value": date}
    if isinstance(value, TimeValue):
        time = {"hour": value.hour, "minute": value.minute, "second": value.second}
        return {"type": "time", "value": time}
    return {"type": _VALUE_TYPES[type(value)], "value": value.value}


def _date_time_json(value: DateTime) -> dict[str, int]:
    return {
        "year": value.year,
        "month": value.month,
        "day": value.day,
        "hour": value.hour,
        "minute": value.minute,
        "second": value.second,
    }


def _check_assignments(
    what: str,
    assignments: Iterable[AttributeAssignment],
    declared: Mapping[str, str],
) -> None:
    seen: set[str] = set()
    for assignment in assignments:
        attribute = assignment.attribute_type_id
        expected = declared.get(attribute)
        if expected is None:
            msg = f"{what} assigns undeclared attribute {attribute!r}"
            raise SnapshotError(msg)
        if attribute in seen:
            msg = f"{what} assigns attribute {attribute!r} twice"
            raise SnapshotError(msg)
        seen.add(attribute)
        actual = _VALUE_TYPES.get(type(assignment.value))
        if actual != expected or not _value_ok(assignment.value):
            msg = f"{what} has an invalid {expected} value for {attribute!r}"
            raise SnapshotError(msg)


def _value_ok(value: Value) -> bool:
    if isinstance(value, BooleanValue):
        return isinstance(value.value, bool)
    if isinstance(value, NumberValue):
        number = value.value
        return (
            isinstance(number, int | float)
            and not isinstance(number, bool)
            and math.isfinite(number)
        )
    if isinstance(value, StringValue):
        return isinstance(value.value, str)
    if isinstance(value, DateValue):
        return _in_ranges(value.year, value.month, value.day)
    if isinstance(value, DateTimeValue):
        d = value.value
        return _in_ranges(d.year, d.month, d.day) and _time_ok(
            d.hour, d.minute, d.second
        )
    return _time_ok(value.hour, value.minute, value.second)


def _in_ranges(year: int, month: int, day: int) -> bool:
    ints = all(
        isinstance(n, int) and not isinstance(n, bool) for n in (year, month, day)
    )
    return ints and 1 <= year <= 9999 and 1 <= month <= 12 and 1 <= day <= 31


def _time_ok(hour: int, minute: int, second: int) -> bool:
    ints = all(
        isinstance(n, int) and not isinstance(n, bool) for n in (hour, minute, second)
    )
    return ints and 0 <= hour <= 23 and 0 <= minute <= 59 and 0 <= second <= 60


def _objects(data_model: Mapping[str, object], key: str) -> list[Mapping[str, object]]:
    entries = data_model.get(key, [])
    if not isinstance(entries, list):
        return []
    return [entry for entry in entries if isinstance(entry, dict)]


def _attribute_types(
    data_model: Mapping[str, object], key: str, scope: tuple[str, ...]
) -> dict[tuple[str, ...], dict[str, str]]:
    declared: dict[tuple[str, ...], dict[str, str]] = {}
    for entry in _objects(data_model, key):
        if entry.get("archived") is True:
            continue
        owner = tuple(str(entry.get(part)) for part in scope)
        declared.setdefault(owner, {})[str(entry.get("id"))] = str(entry.get("type"))
    return declared


def _plurals(data_model: Mapping[str, object]) -> dict[str, str]:
    return {
        str(t.get("id")): str(t.get("plural", t.get("id")))
        for t in _objects(data_model, "entityTypes")
    }
