from elimity_insights_client import Relationship

from elimity_scim.diagnostics import Warnings
from elimity_scim.membership import Memberships


def _rows(relationships: list[Relationship]) -> list[tuple[str, str, str | None]]:
    rows = []
    for r in relationships:
        kinds = [a.value.value for a in r.attribute_assignments]  # type: ignore[union-attr]
        rows.append(
            (
                f"{r.from_entity_type}:{r.from_entity_id}",
                r.to_entity_id,
                kinds[0] if kinds else None,
            )
        )
    return rows


def _memberships(
    groups: dict[str, list[dict[str, object]]], users: list[str]
) -> Memberships:
    memberships = Memberships(Warnings())
    for user in users:
        memberships.add_user(user)
    for group, members in groups.items():
        memberships.add_group(group)
        for member in members:
            memberships.add_member(group, member)
    return memberships


def test_classification_by_type_ref_and_known_group_id() -> None:
    memberships = _memberships(
        {
            "g1": [
                {"value": "u1", "type": "User"},
                {"value": "g2", "type": "Group"},
                {"value": "x", "$ref": "https://h.test/scim/v2/Groups/g3"},
                {"value": "g4"},
                {"value": "u2"},
            ],
            "g2": [],
            "g3": [],
            "g4": [],
        },
        ["u1", "u2"],
    )
    rows = _rows(list(memberships.relationships(effective=False)))
    assert rows == [
        ("user:u1", "g1", "direct"),
        ("user:u2", "g1", "direct"),
        ("group:g2", "g1", None),
        ("group:g3", "g1", None),
        ("group:g4", "g1", None),
    ]
    assert memberships.member_count("g1") == 5


def test_dangling_members_are_dropped_and_reported_once() -> None:
    memberships = _memberships(
        {
            "g1": [
                {"value": "u1"},
                {"value": "gone-1"},
                {"value": "gone-2", "type": "Group"},
                {"value": "gone-3"},
            ]
        },
        ["u1"],
    )
    assert _rows(list(memberships.relationships(effective=True))) == [
        ("user:u1", "g1", "direct")
    ]
    assert memberships.warnings.lines() == [
        "3 × member references that point at nothing the server listed, dropped "
        "(e.g. gone-1, gone-2, gone-3)"
    ]


def test_reference_resolved_by_ref_when_value_matches_nothing() -> None:
    memberships = _memberships(
        {"g1": [{"value": "ext-77", "$ref": "https://h.test/v2/Users/u1"}]}, ["u1"]
    )
    assert _rows(list(memberships.relationships(effective=False))) == [
        ("user:u1", "g1", "direct")
    ]


def test_effective_membership_through_nesting_and_cycles() -> None:
    # g1 ⊂ g2 ⊂ g3 ⊂ g2 (cycle), u1 in g1, u2 in g2 and g3 directly.
    memberships = _memberships(
        {
            "g1": [{"value": "u1", "type": "User"}],
            "g2": [
                {"value": "g1", "type": "Group"},
                {"value": "g3", "type": "Group"},
                {"value": "u2"},
            ],
            "g3": [{"value": "g2", "type": "Group"}, {"value": "u2"}],
        },
        ["u1", "u2"],
    )
    rows = _rows(list(memberships.relationships(effective=True)))
    assert rows == [
        ("user:u1", "g1", "direct"),
        ("user:u1", "g2", "indirect"),
        ("user:u1", "g3", "indirect"),
        ("user:u2", "g2", "direct"),
        ("user:u2", "g3", "direct"),
        ("group:g1", "g2", None),
        ("group:g3", "g2", None),
        ("group:g2", "g3", None),
    ]


def test_duplicate_members_count_once() -> None:
    memberships = _memberships(
        {"g1": [{"value": "u1"}, {"value": "u1", "type": "User"}]}, ["u1"]
    )
    assert _rows(list(memberships.relationships(effective=True))) == [
        ("user:u1", "g1", "direct")
    ]
    assert memberships.member_count("g1") == 1


def test_untyped_member_whose_id_is_a_user_and_a_group_is_the_group() -> None:
    # Users are numbered by their index's order; the ambiguous one ("7") is in the
    # middle, so a wrong number-to-id lookup would name another user.
    warnings = Warnings()
    memberships = Memberships(warnings)
    for user in ("u0", "7", "u2"):
        memberships.add_user(user)
    memberships.add_group("7")
    memberships.add_group("g")
    memberships.add_members("g", [{"value": "7"}, {"value": "u2"}, {"value": "u0"}])

    assert sorted(_rows(list(memberships.relationships(effective=True)))) == [
        ("group:7", "g", None),
        ("user:u0", "g", "direct"),
        ("user:u2", "g", "direct"),
    ]
    assert memberships.member_count("g") == 3
    [line] = warnings.lines()
    assert "matching both a user and a group id" in line
    assert "7" in line
