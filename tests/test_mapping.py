from elimity_insights_client import DateTime, Entity

from elimity_scim.diagnostics import Warnings
from elimity_scim.mapping import group_entity, lowered, user_entity


def _values(entity: Entity) -> dict[str, object]:
    found: dict[str, object] = {}
    for assignment in entity.attribute_assignments:
        value = assignment.value
        found[assignment.attribute_type_id] = getattr(value, "value", value)
    return found


BJENSEN = {
    "schemas": [
        "urn:ietf:params:scim:schemas:core:2.0:User",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
    ],
    "id": "2819c223",
    "externalId": "bjensen-ext",
    "userName": "bjensen@example.test",
    "name": {
        "formatted": "Ms. Barbara J Jensen III",
        "familyName": "Jensen",
        "givenName": "Barbara",
    },
    "displayName": "Babs Jensen",
    "title": "Tour Guide",
    "userType": "Employee",
    "preferredLanguage": "en-US",
    "locale": "en-US",
    "timezone": "America/Los_Angeles",
    "active": True,
    "emails": [
        {"value": "bj@home.test", "type": "home"},
        {"value": "bj@work.test", "type": "work", "primary": True},
    ],
    "meta": {
        "created": "2010-01-23T04:56:22Z",
        "lastModified": "2011-05-13T06:42:22+02:00",
    },
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
        "employeeNumber": "701984",
        "costCenter": "4130",
        "organization": "Universal Studios",
        "division": "Theme Park",
        "department": "Tour Operations",
        "manager": {"value": "26118915", "displayName": "John Smith"},
    },
}


def test_user_maps_every_attribute() -> None:
    warnings = Warnings()
    entity = user_entity("2819c223", lowered(BJENSEN), warnings)
    assert (entity.id, entity.name, entity.type) == ("2819c223", "Babs Jensen", "user")
    assert _values(entity) == {
        "userName": "bjensen@example.test",
        "displayName": "Babs Jensen",
        "givenName": "Barbara",
        "familyName": "Jensen",
        "formattedName": "Ms. Barbara J Jensen III",
        "title": "Tour Guide",
        "userType": "Employee",
        "externalId": "bjensen-ext",
        "preferredLanguage": "en-US",
        "locale": "en-US",
        "timezone": "America/Los_Angeles",
        "employeeNumber": "701984",
        "costCenter": "4130",
        "organization": "Universal Studios",
        "division": "Theme Park",
        "department": "Tour Operations",
        "managerId": "26118915",
        "managerDisplayName": "John Smith",
        "active": True,
        "email": "bj@work.test",
        "created": DateTime(year=2010, month=1, day=23, hour=4, minute=56, second=22),
        "lastModified": DateTime(
            year=2011, month=5, day=13, hour=4, minute=42, second=22
        ),
    }
    assert warnings.lines() == []


def test_attribute_names_are_case_insensitive_and_absent_ones_are_not_assigned() -> (
    None
):
    user = {
        "ID": "7",
        "USERNAME": "kim",
        "Active": "false",
        "EMAILS": [{"VALUE": "k@x.test"}],
    }
    warnings = Warnings()
    entity = user_entity("7", lowered(user), warnings)
    assert entity.name == "kim"
    assert _values(entity) == {"userName": "kim", "active": False, "email": "k@x.test"}
    assert warnings.lines() == ["1 × booleans sent as strings"]


def test_several_primary_emails_take_the_first_and_warn() -> None:
    user = {
        "userName": "a",
        "emails": [
            {"value": "one@x.test", "primary": "true"},
            {"value": "two@x.test", "primary": True},
        ],
    }
    warnings = Warnings()
    assert _values(user_entity("1", lowered(user), warnings))["email"] == "one@x.test"
    assert (
        warnings.counts["users with several primary emails (the first one is used)"]
        == 1
    )


def test_name_falls_back_to_id_and_bad_values_are_skipped() -> None:
    warnings = Warnings()
    entity = user_entity(
        "id-9", lowered({"title": {"x": 1}, "meta": {"created": "yesterday"}}), warnings
    )
    assert entity.name == "id-9"
    assert _values(entity) == {}
    assert warnings.counts["values of title that are not text, skipped"] == 1
    assert warnings.counts["unreadable meta.created timestamps, skipped"] == 1


def test_group_entity_with_member_count() -> None:
    group = {
        "displayName": "Admins",
        "externalId": "e1",
        "meta": {"created": "2020-02-03T10:00:00.123Z"},
    }
    entity = group_entity("g1", lowered(group), 4, Warnings())
    assert (entity.id, entity.name, entity.type) == ("g1", "Admins", "group")
    assert _values(entity) == {
        "displayName": "Admins",
        "externalId": "e1",
        "memberCount": 4,
        "created": DateTime(year=2020, month=2, day=3, hour=10, minute=0, second=0),
    }
