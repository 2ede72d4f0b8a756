"""Hypothesis: any JSON shape maps to valid entities, or is skipped with a warning."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elimity_scim.connector.snapshot import SnapshotValidator
from elimity_scim.diagnostics import Warnings
from elimity_scim.mapping import group_entity, lowered, user_entity
from elimity_scim.membership import Memberships
from elimity_scim.source import ScimSource

SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
KEYS = st.sampled_from(
    [
        "id",
        "userName",
        "USERNAME",
        "displayName",
        "name",
        "givenName",
        "familyName",
        "formatted",
        "title",
        "userType",
        "active",
        "emails",
        "value",
        "primary",
        "externalId",
        "locale",
        "timezone",
        "preferredLanguage",
        "meta",
        "created",
        "lastModified",
        "members",
        "type",
        "$ref",
        "groups",
        "manager",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        "employeeNumber",
        "department",
    ]
) | st.text(max_size=8)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=6)
    ),
    max_leaves=25,
)
DATES = st.sampled_from(
    [
        "2020-01-02T03:04:05Z",
        "2020-01-02T03:04:05.123+05:30",
        "2020-13-45",
        "0001-01-01T00:00:00-01:00",
        "9999-12-31T23:59:59-23:00",
        "",
    ]
)
RESOURCES = st.dictionaries(KEYS, JSON, max_size=10) | st.fixed_dictionaries(
    {"meta": st.fixed_dictionaries({"created": DATES, "lastModified": DATES})},
    optional={"active": SCALARS, "emails": JSON, "name": JSON},
)
MODEL = ScimSource().data_model()


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(resource=RESOURCES, member_lists=st.lists(JSON, max_size=5))
def test_any_resource_maps_to_valid_entities(
    resource: dict[str, object], member_lists: list[object]
) -> None:
    warnings = Warnings()
    validator = SnapshotValidator(MODEL)
    validator.entity(user_entity("u1", lowered(resource), warnings))
    validator.entity(group_entity("g1", lowered(resource), 3, warnings))

    memberships = Memberships(warnings)
    memberships.add_user("u1")
    memberships.add_group("g1")
    for members in member_lists:
        for member in members if isinstance(members, list) else [members]:
            memberships.add_member("g1", member)
    for relationship in memberships.relationships(effective=True):
        validator.relationship(relationship)
    assert validator.counts.entities == {"user": 1, "group": 1}


def _respelled(value: object, upper: bool) -> object:
    # Every attribute name in one case, nested levels included.
    if isinstance(value, dict):
        return {
            (key.upper() if upper else key.lower()): _respelled(item, upper)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_respelled(item, upper) for item in value]
    return value


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(resource=RESOURCES)
def test_mapping_does_not_depend_on_the_case_of_names(
    resource: dict[str, object],
) -> None:
    # The mapping reads RFC-spelled names as they are and respells the others: the
    # entity must come out the same whatever case the server used (RFC 7643 §2.1).
    # Two names that differ only in case collapse to one, as lowering would.
    lower = _respelled(resource, upper=False)
    upper = _respelled(resource, upper=True)
    assert isinstance(lower, dict)
    assert isinstance(upper, dict)
    expected = user_entity("u1", lower, Warnings())
    assert user_entity("u1", upper, Warnings()) == expected
    assert group_entity("g1", upper, 2, Warnings()) == group_entity(
        "g1", lower, 2, Warnings()
    )
    if len({key.lower() for key in resource}) == len(resource):
        assert user_entity("u1", resource, Warnings()) == expected
