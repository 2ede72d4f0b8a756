"""Map SCIM resources (RFC 7643) onto Elimity Insights entities and relationships.

Every function here is pure apart from counting tolerated irregularities in a
``Warnings``. Attribute names are matched case-insensitively (RFC 7643 §2.1).
"""

from __future__ import annotations

from collections.abc import Mapping
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
)

from elimity_scim.diagnostics import Warnings

JsonObject = Mapping[str, object]

ENTERPRISE_USER = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
USER = "user"
GROUP = "group"
MEMBERSHIP_TYPE = "membershipType"
DIRECT = "direct"
INDIRECT = "indirect"
_EMPTY: dict[str, object] = {}


class _Level:
    """The attribute names one level of a resource carries, as RFC 7643 spells them.

    Mapping reads attributes by their RFC spelling. Most servers use it, so a level
    whose names all have that spelling is read as it is; only a level with a name in
    another case (RFC 7643 §2.1) is copied with its names respelled.
    """

    def __init__(self, *names: str) -> None:
        self.spelled = frozenset(names)
        self._spelling = {name.lower(): name for name in names}

    def view(self, value: object) -> Mapping[str, object]:
        """Return ``value`` with the names of this level in their RFC spelling."""
        if type(value) is dict and self.spelled.issuperset(value):
            return value
        if not isinstance(value, dict):
            return _EMPTY
        return self._respelled(value)

    def _respelled(self, value: Mapping[str, object]) -> Mapping[str, object]:
        spelling = self._spelling
        if not any(str(key).lower() in spelling for key in value.keys() - self.spelled):
            return value  # only names this mapping does not read
        # As with lower-casing, the last of two names differing in case wins.
        return {spelling.get(str(k).lower(), k): v for k, v in value.items()}


_USER = _Level(
    "schemas", "id", "externalId", "meta", "userName", "name", "displayName",
    "nickName", "profileUrl", "title", "userType", "preferredLanguage", "locale",
    "timezone", "active", "password", "emails", "phoneNumbers", "ims", "photos",
    "addresses", "groups", "entitlements", "roles", "x509Certificates",
    ENTERPRISE_USER,
)  # fmt: skip
_NAME = _Level(
    "formatted", "familyName", "givenName", "middleName", "honorificPrefix",
    "honorificSuffix",
)  # fmt: skip
_ENTERPRISE = _Level(
    "employeeNumber", "costCenter", "organization", "division", "department",
    "manager",
)  # fmt: skip
_MANAGER = _Level("value", "$ref", "displayName")
_META = _Level("resourceType", "created", "lastModified", "location", "version")
_EMAIL = _Level("value", "display", "type", "primary")
_GROUP = _Level("schemas", "id", "externalId", "meta", "displayName", "members")

# Many attributes repeat across users (department, locale, title, …). Their
# assignments are shared rather than built again for every user: nothing downstream
# mutates them, and building objects is most of the mapping's cost. A cache that
# fills up (a value unique to each user, say) is emptied and starts again.
_Shared = dict[str, AttributeAssignment]
_SHARED_MAX = 10_000

# (Insights attribute id, SCIM attribute name, cache of shared assignments or None)
_Fields = tuple[tuple[str, str, _Shared | None], ...]


def _fields(*entries: tuple[str, str, bool]) -> _Fields:
    return tuple((attr, key, {} if shared else None) for attr, key, shared in entries)


# In the order the assignments have always had: the names, then the rest.
_USER_NAMES = _fields(
    ("userName", "userName", False),
    ("displayName", "displayName", False),
)
_USER_STRINGS = _fields(
    ("title", "title", True),
    ("userType", "userType", True),
    ("externalId", "externalId", False),
    ("preferredLanguage", "preferredLanguage", True),
    ("locale", "locale", True),
    ("timezone", "timezone", True),
)
_NAME_STRINGS = _fields(
    ("givenName", "givenName", False),
    ("familyName", "familyName", False),
    ("formattedName", "formatted", False),
)
_ENTERPRISE_STRINGS = _fields(
    ("employeeNumber", "employeeNumber", False),
    ("costCenter", "costCenter", True),
    ("organization", "organization", True),
    ("division", "division", True),
    ("department", "department", True),
)
_MANAGER_STRINGS = _fields(
    ("managerId", "value", False),
    ("managerDisplayName", "displayName", False),
)
_GROUP_STRINGS = _fields(
    ("displayName", "displayName", False),
    ("externalId", "externalId", False),
)
_MEMBERSHIP_TYPES = {
    kind: AttributeAssignment(MEMBERSHIP_TYPE, StringValue(kind))
    for kind in (DIRECT, INDIRECT)
}
_ACTIVE = AttributeAssignment("active", BooleanValue(True))
_INACTIVE = AttributeAssignment("active", BooleanValue(False))


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


def user_entity(user_id: str, user: JsonObject, warnings: Warnings) -> Entity:
    """Map one SCIM User (attribute names in any case) onto an Insights user entity."""
    top = _USER.view(user)
    enterprise = _ENTERPRISE.view(top.get(ENTERPRISE_USER))
    assignments: list[AttributeAssignment] = []
    _strings(assignments, top, _USER_NAMES, "", warnings)
    _strings(assignments, _NAME.view(top.get("name")), _NAME_STRINGS, "name", warnings)
    _strings(assignments, top, _USER_STRINGS, "", warnings)
    if enterprise:
        _strings(assignments, enterprise, _ENTERPRISE_STRINGS, "enterprise", warnings)
        manager = _MANAGER.view(enterprise.get("manager"))
        _strings(assignments, manager, _MANAGER_STRINGS, "manager", warnings)
    active = top.get("active")
    if active is True:
        assignments.append(_ACTIVE)
    elif active is False:
        assignments.append(_INACTIVE)
    elif active is not None:
        parsed = _boolean(active, warnings)
        if parsed is not None:
            assignments.append(_ACTIVE if parsed else _INACTIVE)
    email = primary_email(top, warnings)
    if email is not None:
        assignments.append(AttributeAssignment("email", StringValue(email)))
    meta = top.get("meta")
    if meta is not None:
        _dates(assignments, _META.view(meta), warnings)
    name = _text(top.get("displayName")) or _text(top.get("userName")) or user_id
    return Entity(assignments, user_id, name, USER)


def user_groups(user: JsonObject) -> object:
    """Return a user's ``groups`` attribute (RFC 7643 §4.1.2), whatever its case."""
    return _USER.view(user).get("groups")


def group_entity(
    group_id: str, group: JsonObject, member_count: int | None, warnings: Warnings
) -> Entity:
    """Map one SCIM Group (attribute names in any case) onto an Insights entity."""
    top = _GROUP.view(group)
    assignments: list[AttributeAssignment] = []
    _strings(assignments, top, _GROUP_STRINGS, "", warnings)
    if member_count is not None:
        assignments.append(
            AttributeAssignment("memberCount", NumberValue(member_count))
        )
    meta = top.get("meta")
    if meta is not None:
        _dates(assignments, _META.view(meta), warnings)
    name = _text(top.get("displayName")) or group_id
    return Entity(assignments, group_id, name, GROUP)


def membership(
    from_id: str, from_type: str, group_id: str, membership_type: str | None
) -> Relationship:
    """Return the relationship from a member to the group that contains it."""
    if membership_type is None:
        return Relationship([], from_id, from_type, group_id, GROUP)
    shared = _MEMBERSHIP_TYPES.get(membership_type)
    if shared is None:
        shared = AttributeAssignment(MEMBERSHIP_TYPE, StringValue(membership_type))
    return Relationship([shared], from_id, from_type, group_id, GROUP)


def primary_email(user: JsonObject, warnings: Warnings) -> str | None:
    """Return the primary email address, else the first one.

    ``user`` has its top-level attribute names in their RFC 7643 spelling.
    """
    emails = user.get("emails")
    if not isinstance(emails, list):
        return None
    candidates = [
        (email, _text(email.get("value")))
        for email in map(_EMAIL.view, emails)
        if email
    ]
    values = [(email, value) for email, value in candidates if value]
    primaries = [value for email, value in values if _is_true(email.get("primary"))]
    if len(primaries) > 1:
        warnings.add("users with several primary emails (the first one is used)")
    chosen = primaries or [value for _, value in values]
    return chosen[0] if chosen else None


def _strings(
    assignments: list[AttributeAssignment],
    scope: Mapping[str, object],
    fields: _Fields,
    where: str,
    warnings: Warnings,
) -> None:
    for attribute, key, shared in fields:
        raw = scope.get(key)
        if raw is None:
            continue
        text = raw if type(raw) is str else _text(raw)
        if text is None:
            name = f"{where}.{key}" if where else key
            warnings.add(f"values of {name} that are not text, skipped")
        elif not text:
            continue
        elif shared is None:
            assignments.append(AttributeAssignment(attribute, StringValue(text)))
        else:
            found = shared.get(text)
            if found is None:
                if len(shared) >= _SHARED_MAX:
                    shared.clear()
                found = shared[text] = AttributeAssignment(attribute, StringValue(text))
            assignments.append(found)


def _dates(
    assignments: list[AttributeAssignment],
    meta: Mapping[str, object],
    warnings: Warnings,
) -> None:
    for attribute, key in (("created", "created"), ("lastModified", "lastModified")):
        raw = meta.get(key)
        if raw is None:
            continue
        value = _date_time(raw)
        if value is None:
            warnings.add(f"unreadable meta.{key} timestamps, skipped")
            continue
        assignments.append(AttributeAssignment(attribute, DateTimeValue(value)))


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
    if type(value) is not str:
        return None
    try:
        # The C parser handles the usual forms; dateutil the rarer ISO 8601 ones.
        moment = datetime.fromisoformat(value)
    except ValueError:
        try:
            moment = isoparse(value)
        except (ValueError, OverflowError):
            return None
    zone = moment.tzinfo
    # RFC 7643 §2.3.5: xsd:dateTime; a value without offset is taken as UTC.
    if zone is not None and zone is not UTC:
        try:
            moment = moment.astimezone(UTC)
        except (ValueError, OverflowError):
            return None
    return DateTime(
        moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second
    )
