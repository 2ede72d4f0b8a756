"""Map SCIM resources (RFC 7643) onto Elimity Insights entities and relationships.

Every function here is pure apart from counting tolerated irregularities in a
``Warnings``. Attribute names are matched case-insensitively (RFC 7643 §2.1).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

from dateutil.parser import isoparse
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

from elimity_scim.diagnostics import Warnings

JsonObject = Mapping[str, object]

ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user"
USER = "user"
GROUP = "group"
MEMBERSHIP_TYPE = "membershipType"
DIRECT = "direct"
INDIRECT = "indirect"

# (Insights attribute id, path of lower-cased SCIM attribute names)
_USER_STRINGS = (
    ("userName", ("username",)),
    ("displayName", ("displayname",)),
    ("givenName", ("name", "givenname")),
    ("familyName", ("name", "familyname")),
    ("formattedName", ("name", "formatted")),
    ("title", ("title",)),
    ("userType", ("usertype",)),
    ("externalId", ("externalid",)),
    ("preferredLanguage", ("preferredlanguage",)),
    ("locale", ("locale",)),
    ("timezone", ("timezone",)),
    ("employeeNumber", (ENTERPRISE_USER, "employeenumber")),
    ("costCenter", (ENTERPRISE_USER, "costcenter")),
    ("organization", (ENTERPRISE_USER, "organization")),
    ("division", (ENTERPRISE_USER, "division")),
    ("department", (ENTERPRISE_USER, "department")),
    ("managerId", (ENTERPRISE_USER, "manager", "value")),
    ("managerDisplayName", (ENTERPRISE_USER, "manager", "displayname")),
)
_GROUP_STRINGS = (
    ("displayName", ("displayname",)),
    ("externalId", ("externalid",)),
)
_DATES = (("created", ("meta", "created")), ("lastModified", ("meta", "lastmodified")))


def lowered(resource: JsonObject) -> dict[str, object]:
    """Return a resource with lower-cased attribute names, nested objects included."""
    return {key.lower(): _lowered_value(value) for key, value in resource.items()}


def _lowered_value(value: object) -> object:
    if isinstance(value, dict):
        return lowered(value)
    if isinstance(value, list):
        return [lowered(item) if isinstance(item, dict) else item for item in value]
    return value


def user_entity(user_id: str, user: JsonObject, warnings: Warnings) -> Entity:
    """Map one SCIM User (with lower-cased names) onto an Insights user entity."""
    assignments = list(_strings(user, _USER_STRINGS, warnings))
    active = _boolean(user.get("active"), warnings)
    if active is not None:
        assignments.append(_assignment("active", BooleanValue(active)))
    email = primary_email(user, warnings)
    if email is not None:
        assignments.append(_assignment("email", StringValue(email)))
    assignments.extend(_dates(user, warnings))
    name = _text(user.get("displayname")) or _text(user.get("username")) or user_id
    return Entity(attribute_assignments=assignments, id=user_id, name=name, type=USER)


def group_entity(
    group_id: str, group: JsonObject, member_count: int | None, warnings: Warnings
) -> Entity:
    """Map one SCIM Group (with lower-cased names) onto an Insights group entity."""
    assignments = list(_strings(group, _GROUP_STRINGS, warnings))
    if member_count is not None:
        assignments.append(_assignment("memberCount", NumberValue(member_count)))
    assignments.extend(_dates(group, warnings))
    name = _text(group.get("displayname")) or group_id
    return Entity(attribute_assignments=assignments, id=group_id, name=name, type=GROUP)


def membership(
    from_id: str, from_type: str, group_id: str, membership_type: str | None
) -> Relationship:
    """Return the relationship from a member to the group that contains it."""
    assignments = []
    if membership_type is not None:
        value = StringValue(membership_type)
        assignments.append(_assignment(MEMBERSHIP_TYPE, value))
    return Relationship(
        attribute_assignments=assignments,
        from_entity_id=from_id,
        from_entity_type=from_type,
        to_entity_id=group_id,
        to_entity_type=GROUP,
    )


def primary_email(user: JsonObject, warnings: Warnings) -> str | None:
    """Return the primary email address, else the first one."""
    emails = user.get("emails")
    if not isinstance(emails, list):
        return None
    candidates = [
        (email, _text(email.get("value")))
        for email in emails
        if isinstance(email, dict)
    ]
    values = [(email, value) for email, value in candidates if value]
    primaries = [value for email, value in values if _is_true(email.get("primary"))]
    if len(primaries) > 1:
        warnings.add("users with several primary emails (the first one is used)")
    chosen = primaries or [value for _, value in values]
    return chosen[0] if chosen else None


def _strings(
    resource: JsonObject,
    fields: tuple[tuple[str, tuple[str, ...]], ...],
    warnings: Warnings,
) -> Iterator[AttributeAssignment]:
    for attribute, path in fields:
        raw = _path(resource, path)
        if raw is None:
            continue
        text = _text(raw)
        if text is None:
            warnings.add(f"values of {'.'.join(path)} that are not text, skipped")
            continue
        yield _assignment(attribute, StringValue(text))


def _dates(resource: JsonObject, warnings: Warnings) -> Iterator[AttributeAssignment]:
    for attribute, path in _DATES:
        raw = _path(resource, path)
        if raw is None:
            continue
        value = _date_time(raw)
        if value is None:
            warnings.add(f"unreadable {'.'.join(path)} timestamps, skipped")
            continue
        yield _assignment(attribute, DateTimeValue(value))


def _path(resource: JsonObject, path: tuple[str, ...]) -> object:
    value: object = resource
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _is_true(value: object) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _boolean(value: object, warnings: Warnings) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        warnings.add("booleans sent as strings")
        return value.strip().lower() == "true"
    warnings.add("values of active that are not booleans, skipped")
    return None


def _date_time(value: object) -> DateTime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = isoparse(value)
    except (ValueError, OverflowError):
        return None
    # RFC 7643 §2.3.5: xsd:dateTime; a value without offset is taken as UTC.
    moment = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    try:
        utc = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return _utc_parts(utc)


def _utc_parts(moment: datetime) -> DateTime:
    return DateTime(
        year=moment.year,
        month=moment.month,
        day=moment.day,
        hour=moment.hour,
        minute=moment.minute,
        second=moment.second,
    )


def _assignment(attribute_type_id: str, value: Value) -> AttributeAssignment:
    return AttributeAssignment(attribute_type_id=attribute_type_id, value=value)
