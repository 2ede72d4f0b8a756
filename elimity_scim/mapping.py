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

# (Insights attribute id, where the SCIM attribute lives, its lower-cased name)
_USER_STRINGS = (
    ("userName", "", "username"),
    ("displayName", "", "displayname"),
    ("givenName", "name", "givenname"),
    ("familyName", "name", "familyname"),
    ("formattedName", "name", "formatted"),
    ("title", "", "title"),
    ("userType", "", "usertype"),
    ("externalId", "", "externalid"),
    ("preferredLanguage", "", "preferredlanguage"),
    ("locale", "", "locale"),
    ("timezone", "", "timezone"),
    ("employeeNumber", "enterprise", "employeenumber"),
    ("costCenter", "enterprise", "costcenter"),
    ("organization", "enterprise", "organization"),
    ("division", "enterprise", "division"),
    ("department", "enterprise", "department"),
    ("managerId", "manager", "value"),
    ("managerDisplayName", "manager", "displayname"),
)
_GROUP_STRINGS = (
    ("displayName", "", "displayname"),
    ("externalId", "", "externalid"),
)
_DATES = (("created", "created"), ("lastModified", "lastmodified"))
_EMPTY: dict[str, object] = {}
_MEMBERSHIP_TYPES = {
    kind: AttributeAssignment(
        attribute_type_id=MEMBERSHIP_TYPE, value=StringValue(kind)
    )
    for kind in (DIRECT, INDIRECT)
}
_ACTIVE = AttributeAssignment(attribute_type_id="active", value=BooleanValue(True))
_INACTIVE = AttributeAssignment(attribute_type_id="active", value=BooleanValue(False))


def lowered(resource: JsonObject) -> dict[str, object]:
    """Return a resource with lower-cased attribute names, nested objects included."""
    return {key.lower(): _lowered_value(value) for key, value in resource.items()}


def lowered_get(resource: JsonObject, name: str) -> object:
    """Return the attribute ``name`` (lower case) whatever the case of its key."""
    for key, value in resource.items():
        if key.lower() == name:
            return value
    return None


def _lowered_value(value: object) -> object:
    if isinstance(value, dict):
        return lowered(value)
    if isinstance(value, list):
        return [lowered(item) if isinstance(item, dict) else item for item in value]
    return value


def _shallow(value: object) -> Mapping[str, object]:
    # Lower-cases one level only: the mapping reads a handful of known attributes,
    # so lowering whole resources would be wasted work on the hot path.
    if not isinstance(value, dict):
        return _EMPTY
    return {str(key).lower(): item for key, item in value.items()}


def user_entity(user_id: str, user: JsonObject, warnings: Warnings) -> Entity:
    """Map one SCIM User (attribute names in any case) onto an Insights user entity."""
    top = _shallow(user)
    enterprise = _shallow(top.get(ENTERPRISE_USER))
    scopes = {
        "": top,
        "name": _shallow(top.get("name")),
        "enterprise": enterprise,
        "manager": _shallow(enterprise.get("manager")),
    }
    assignments = _strings(scopes, _USER_STRINGS, warnings)
    active = _boolean(top.get("active"), warnings)
    if active is not None:
        assignments.append(_ACTIVE if active else _INACTIVE)
    email = primary_email(top, warnings)
    if email is not None:
        assignments.append(_assignment("email", StringValue(email)))
    assignments.extend(_dates(_shallow(top.get("meta")), warnings))
    name = _text(top.get("displayname")) or _text(top.get("username")) or user_id
    return Entity(attribute_assignments=assignments, id=user_id, name=name, type=USER)


def group_entity(
    group_id: str, group: JsonObject, member_count: int | None, warnings: Warnings
) -> Entity:
    """Map one SCIM Group (attribute names in any case) onto an Insights entity."""
    top = _shallow(group)
    assignments = _strings({"": top}, _GROUP_STRINGS, warnings)
    if member_count is not None:
        assignments.append(_assignment("memberCount", NumberValue(member_count)))
    assignments.extend(_dates(_shallow(top.get("meta")), warnings))
    name = _text(top.get("displayname")) or group_id
    return Entity(attribute_assignments=assignments, id=group_id, name=name, type=GROUP)


def membership(
    from_id: str, from_type: str, group_id: str, membership_type: str | None
) -> Relationship:
    """Return the relationship from a member to the group that contains it."""
    assignments = []
    if membership_type is not None:
        shared = _MEMBERSHIP_TYPES.get(membership_type)
        if shared is None:
            shared = _assignment(MEMBERSHIP_TYPE, StringValue(membership_type))
        assignments.append(shared)
    return Relationship(
        attribute_assignments=assignments,
        from_entity_id=from_id,
        from_entity_type=from_type,
        to_entity_id=group_id,
        to_entity_type=GROUP,
    )


def primary_email(user: JsonObject, warnings: Warnings) -> str | None:
    """Return the primary email address, else the first one.

    ``user`` has lower-cased top-level attribute names.
    """
    emails = user.get("emails")
    if not isinstance(emails, list):
        return None
    candidates = [
        (email, _text(email.get("value"))) for email in map(_shallow, emails) if email
    ]
    values = [(email, value) for email, value in candidates if value]
    primaries = [value for email, value in values if _is_true(email.get("primary"))]
    if len(primaries) > 1:
        warnings.add("users with several primary emails (the first one is used)")
    chosen = primaries or [value for _, value in values]
    return chosen[0] if chosen else None


def _strings(
    scopes: Mapping[str, Mapping[str, object]],
    fields: tuple[tuple[str, str, str], ...],
    warnings: Warnings,
) -> list[AttributeAssignment]:
    assignments = []
    for attribute, scope, key in fields:
        raw = scopes[scope].get(key)
        if raw is None:
            continue
        text = raw if type(raw) is str else _text(raw)
        if text is None:
            where = f"{scope}.{key}" if scope else key
            warnings.add(f"values of {where} that are not text, skipped")
            continue
        if text:
            assignments.append(_string_assignment(attribute, text))
    return assignments


# Many attributes repeat across users (department, locale, title, …). Their value
# objects are shared rather than built again for every user: nothing downstream
# mutates them, and building objects is most of the mapping's cost.
_SHARED = frozenset(
    {
        "title",
        "userType",
        "preferredLanguage",
        "locale",
        "timezone",
        "costCenter",
        "organization",
        "division",
        "department",
    }
)
_SHARED_MAX = 50_000
_shared: dict[tuple[str, str], AttributeAssignment] = {}


def _string_assignment(attribute: str, text: str) -> AttributeAssignment:
    if attribute not in _SHARED:
        return AttributeAssignment(attribute_type_id=attribute, value=StringValue(text))
    key = (attribute, text)
    found = _shared.get(key)
    if found is None:
        if len(_shared) >= _SHARED_MAX:
            _shared.clear()
        found = _shared[key] = AttributeAssignment(
            attribute_type_id=attribute, value=StringValue(text)
        )
    return found


def _dates(
    meta: Mapping[str, object], warnings: Warnings
) -> Iterator[AttributeAssignment]:
    for attribute, key in _DATES:
        raw = meta.get(key)
        if raw is None:
            continue
        value = _date_time(raw)
        if value is None:
            warnings.add(f"unreadable meta.{key} timestamps, skipped")
            continue
        yield _assignment(attribute, DateTimeValue(value))


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
        # The C parser handles the usual forms; dateutil the rarer ISO 8601 ones.
        parsed = datetime.fromisoformat(value)
    except ValueError:
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
