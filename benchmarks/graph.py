"""Build the Insights graph the connector builds, for the baseline and the reference.

Both feed plain values (``str``, ``bool``, aware ``datetime``) per attribute id of
the product's data model (``elimity_scim/data_model.json``); this module turns them
into ``elimity_insights_client`` objects and derives the relationships the product
derives: user→group ``direct`` from the groups' members, user→group ``indirect``
through nested groups, and child group→parent group. ``memberCount`` is the number
of distinct direct members that exist.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from elimity_insights_client import (
    AttributeAssignment,
    BooleanValue,
    DateTime,
    DateTimeValue,
    Entity,
    NumberValue,
    Relationship,
    StringValue,
    Value,
)

Member = tuple[str, str]  # (value, "User" or "Group")


def _value(raw: object) -> Value:
    if isinstance(raw, bool):
        return BooleanValue(raw)
    if isinstance(raw, int | float):
        return NumberValue(raw)
    if isinstance(raw, datetime):
        utc = raw.astimezone(UTC) if raw.tzinfo else raw
        return DateTimeValue(
            DateTime(utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second)
        )
    return StringValue(str(raw))


def assignments(attributes: Mapping[str, object]) -> list[AttributeAssignment]:
    """Return one assignment per attribute that has a value."""
    return [
        AttributeAssignment(attribute_type_id=key, value=_value(raw))
        for key, raw in attributes.items()
        if raw is not None and raw != ""
    ]


class GraphBuilder:
    """Collects users and groups, then derives memberships."""

    def __init__(self) -> None:
        self.entities: list[Entity] = []
        self.user_ids: set[str] = set()
        self._groups: list[tuple[str, str, dict[str, object], list[Member]]] = []

    def add_user(self, user_id: str, name: str, attributes: dict[str, object]) -> None:
        """Add a user entity."""
        self.user_ids.add(user_id)
        self.entities.append(
            Entity(
                attribute_assignments=assignments(attributes),
                id=user_id,
                name=name,
                type="user",
            )
        )

    def add_group(
        self,
        group_id: str,
        name: str,
        attributes: dict[str, object],
        members: Iterable[Member],
    ) -> None:
        """Remember a group and its members; its entity is made in ``finish``."""
        self._groups.append((group_id, name, attributes, list(members)))

    def finish(self) -> tuple[list[Entity], list[Relationship]]:
        """Return every entity and every relationship."""
        group_ids = {group_id for group_id, _, _, _ in self._groups}
        direct: dict[str, list[str]] = {}  # user -> groups
        parents: dict[str, list[str]] = {}  # group -> groups containing it
        relationships: list[Relationship] = []
        for group_id, name, attributes, members in self._groups:
            users = {v for v, kind in members if kind == "User" and v in self.user_ids}
            children = {v for v, kind in members if kind == "Group" and v in group_ids}
            for user in users:
                direct.setdefault(user, []).append(group_id)
            for child in sorted(children):
                parents.setdefault(child, []).append(group_id)
                relationships.append(_relationship(child, "group", group_id, None))
            attributes = {
                "displayName": attributes.get("displayName"),
                "externalId": attributes.get("externalId"),
                "memberCount": len(users) + len(children),
                "created": attributes.get("created"),
                "lastModified": attributes.get("lastModified"),
            }
            self.entities.append(
                Entity(
                    attribute_assignments=assignments(attributes),
                    id=group_id,
                    name=name,
                    type="group",
                )
            )
        ancestors = {group: _ancestors(group, parents) for group in parents}
        for user, groups in direct.items():
            for group in groups:
                relationships.append(_relationship(user, "user", group, "direct"))
            indirect: set[str] = set()
            for group in groups:
                indirect |= ancestors.get(group, set())
            for group in sorted(indirect.difference(groups)):
                relationships.append(_relationship(user, "user", group, "indirect"))
        return self.entities, relationships


def _ancestors(group: str, parents: Mapping[str, list[str]]) -> set[str]:
    seen: set[str] = set()
    stack = list(parents.get(group, ()))
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(parents.get(node, ()))
    return seen


def _relationship(
    from_id: str, from_type: str, group_id: str, membership_type: str | None
) -> Relationship:
    attributes = {"membershipType": membership_type} if membership_type else {}
    return Relationship(
        attribute_assignments=assignments(attributes),
        from_entity_id=from_id,
        from_entity_type=from_type,
        to_entity_id=group_id,
        to_entity_type="group",
    )
