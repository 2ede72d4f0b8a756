"""Member quirks (SCIM-QUIRKS 7 to 10), membership strategies, effective membership."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from elimity_scim.errors import ScimConnectorError
from tests.support.fake_scim import (
    FakeScim,
    Fault,
    RecordedRequest,
    Resource,
    Triple,
    group,
    member,
    read_fake,
    user,
)

REF_BASE = "https://scim.example.test/scim/v2"


def _flat_users() -> list[Resource]:
    return [user("u1"), user("u2"), user("u3"), user("u4")]


def _flat_groups() -> list[Resource]:
    return [
        group("g1", [member("u1", "User"), member("u2", "User")]),
        group("g2", [member("u3", "User")]),
        group("g3", []),
    ]


FLAT: list[Triple] = [
    ("u1", "g1", "direct"),
    ("u2", "g1", "direct"),
    ("u3", "g2", "direct"),
]


def _strategy_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith("Membership strategy")
    ]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def _by_id(fake: FakeScim) -> list[str]:
    return sorted(r.path for r in fake.requests if r.path.startswith("/Groups/"))


def _filters(fake: FakeScim) -> list[tuple[str, str]]:
    return [(r.path, r.query["filter"]) for r in fake.requests if "filter" in r.query]


@pytest.fixture
def caplog_info(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="elimity_scim")
    return caplog


# -- Automatic choice of the membership strategy --------------------------------


def test_auto_picks_inline_when_the_list_carries_members(
    caplog_info: pytest.LogCaptureFixture,
) -> None:
    with FakeScim(_flat_users(), _flat_groups()) as fake:
        reading = read_fake(fake)

    assert reading.users == ["u1", "u2", "u3", "u4"]
    assert reading.groups == ["g1", "g2", "g3"]
    assert reading.relationships == FLAT
    assert _strategy_lines(caplog_info) == [
        "Membership strategy inline: 2 of 3 listed groups carry members"
    ]
    assert _by_id(fake) == []
    assert _filters(fake) == []
    member_counts = [reading.attributes[g]["memberCount"] for g in reading.groups]
    assert member_counts == [2, 1, 0]


def test_members_missing_from_the_list_are_read_per_group(
    caplog_info: pytest.LogCaptureFixture,
) -> None:
    # SCIM-QUIRKS 7: no "members" in GET /Groups, but in GET /Groups/{id}.
    with FakeScim(_flat_users(), _flat_groups(), list_members="omit") as fake:
        reading = read_fake(fake)

    assert reading.groups == ["g1", "g2", "g3"]
    assert reading.relationships == FLAT
    assert _strategy_lines(caplog_info) == [
        "Membership strategy perGroup: groups carry members only when read by id"
    ]
    assert set(_by_id(fake)) == {"/Groups/g1", "/Groups/g2", "/Groups/g3"}
    assert _filters(fake) == []


def test_auto_picks_user_groups_when_only_users_name_their_groups(
    caplog_info: pytest.LogCaptureFixture,
) -> None:
    with FakeScim(
        _flat_users(),
        _flat_groups(),
        list_members="omit",
        get_members="omit",
        user_groups=True,
    ) as fake:
        reading = read_fake(fake)

    assert reading.groups == ["g1", "g2", "g3"]
    assert reading.relationships == FLAT
    assert _strategy_lines(caplog_info) == [
        "Membership strategy userGroups: the users' groups attribute names their groups"
    ]
    assert _filters(fake) == []


def test_auto_picks_filters_on_users_when_member_lists_are_always_empty(
    caplog_info: pytest.LogCaptureFixture,
) -> None:
    # AWS IAM Identity Center style: members only through filter queries.
    with FakeScim(
        _flat_users(), _flat_groups(), list_members="empty", get_members="empty"
    ) as fake:
        reading = read_fake(fake)

    assert reading.groups == ["g1", "g2", "g3"]
    assert reading.relationships == FLAT
    assert _strategy_lines(caplog_info) == [
        "Membership strategy filter: only filter queries on users' groups find members"
    ]
    asked = {query for path, query in _filters(fake) if path == "/Users"}
    probe = 'groups.value eq "elimity-scim-probe-00000000-no-such-id"'
    assert asked == {f'groups.value eq "{g}"' for g in ("g1", "g2", "g3")} | {probe}


def test_auto_picks_filters_on_groups_when_users_cannot_be_filtered(
    caplog_info: pytest.LogCaptureFixture,
) -> None:
    with FakeScim(
        _flat_users(),
        _flat_groups(),
        list_members="empty",
        get_members="empty",
        filter_users_by_group=False,
    ) as fake:
        reading = read_fake(fake)

    assert reading.relationships == FLAT
    assert _strategy_lines(caplog_info) == [
        "Membership strategy filter: only filter queries on groups' members find "
        "members"
    ]
    asked = {query for path, query in _filters(fake) if path == "/Groups"}
    probe = 'members.value eq "elimity-scim-probe-00000000-no-such-id"'
    assert asked == {f'members.value eq "u{n}"' for n in range(1, 5)} | {probe}


def test_auto_refuses_when_memberships_look_unavailable() -> None:
    with (
        FakeScim(
            _flat_users(),
            _flat_groups(),
            list_members="empty",
            get_members="omit",
            filter_users_by_group=False,
            filter_groups_by_member=False,
        ) as fake,
        pytest.raises(
            ScimConnectorError,
            match=(
                r"^membership looks unavailable: none of 3 groups carries members in "
                r"the list or when read by id, no user names a group, and filter "
                r"queries find no member; refusing to import 3 groups as empty "
                r"\(set membershipStrategy=none to do so\)$"
            ),
        ),
    ):
        read_fake(fake)


def test_strategy_none_imports_groups_without_memberships() -> None:
    with FakeScim(
        _flat_users(),
        _flat_groups(),
        list_members="empty",
        get_members="omit",
        filter_users_by_group=False,
        filter_groups_by_member=False,
    ) as fake:
        reading = read_fake(fake, "membershipStrategy=none")

    assert reading.users == ["u1", "u2", "u3", "u4"]
    assert reading.groups == ["g1", "g2", "g3"]
    assert reading.relationships == []
    assert _by_id(fake) == []
    assert _filters(fake) == []
    listed = fake.requests_to("/Groups")
    assert {r.query.get("excludedAttributes") for r in listed} == {"members"}


def test_strategy_none_claims_no_member_count() -> None:
    # Memberships were not read: a memberCount of 0 would be an invented fact.
    with FakeScim(_flat_users(), _flat_groups()) as fake:
        reading = read_fake(fake, "membershipStrategy=none")

    assert reading.relationships == []
    assert [reading.attributes[g].get("memberCount") for g in reading.groups] == [
        None,
        None,
        None,
    ]


# -- Forced strategies ------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "knobs"),
    [
        ("inline", {}),
        ("perGroup", {"list_members": "omit"}),
        (
            "userGroups",
            {"list_members": "omit", "get_members": "omit", "user_groups": True},
        ),
        ("filter", {"list_members": "empty", "get_members": "empty"}),
        (
            "filter",
            {
                "list_members": "empty",
                "get_members": "empty",
                "filter_users_by_group": False,
            },
        ),
    ],
    ids=["inline", "perGroup", "userGroups", "filter-users", "filter-groups"],
)
def test_forced_strategy(
    strategy: str, knobs: dict[str, Any], caplog_info: pytest.LogCaptureFixture
) -> None:
    with FakeScim(_flat_users(), _flat_groups(), **knobs) as fake:
        reading = read_fake(fake, f"membershipStrategy={strategy}")

    assert reading.groups == ["g1", "g2", "g3"]
    assert reading.relationships == FLAT
    assert _strategy_lines(caplog_info) == []
    listed = [r for r in fake.requests_to("/Groups") if "filter" not in r.query]
    excluded = {r.query.get("excludedAttributes") for r in listed}
    assert excluded == ({None} if strategy == "inline" else {"members"})
    if strategy == "perGroup":
        assert _by_id(fake) == ["/Groups/g1", "/Groups/g2", "/Groups/g3"]
    else:
        assert _by_id(fake) == []
    assert bool(_filters(fake)) == (strategy == "filter")


def test_forced_per_group_reads_ids_that_need_escaping() -> None:
    groups = [group("team/a b", [member("u1", "User")]), group("g+2", [])]
    with FakeScim([user("u1")], groups) as fake:
        reading = read_fake(fake, "membershipStrategy=perGroup")

    assert reading.relationships == [("u1", "team/a b", "direct")]
    raw = {r.raw_path for r in fake.requests if r.path.startswith("/Groups/")}
    assert raw == {"/Groups/team%2Fa%20b", "/Groups/g%2B2"}


# -- 7. Members missing from lists, for some groups only --------------------------


def test_group_listed_without_members_key_is_read_by_id(
    caplog_info: pytest.LogCaptureFixture,
) -> None:
    # SCIM-QUIRKS 7: some servers list direct user members but drop nested groups;
    # a group whose only members are groups is then listed without "members".
    groups = [
        group("g1", [member("u1", "User")]),
        group("g2", [member("g1", "Group")]),
    ]
    with FakeScim([user("u1")], groups, list_members="users_only") as fake:
        reading = read_fake(fake)

    assert reading.relationships == [
        ("g1", "g2", None),
        ("u1", "g1", "direct"),
        ("u1", "g2", "indirect"),
    ]
    assert "/Groups/g2" in _by_id(fake)


# -- 8. Large groups break lists ------------------------------------------------


def _with_members(request: RecordedRequest) -> bool:
    return "excludedAttributes" not in request.query and "filter" not in request.query


@pytest.mark.parametrize(
    "fault",
    [
        Fault(
            status=500,
            body="<html><body><h1>Internal Server Error</h1></body></html>",
            content_type="text/html",
            path="/Groups",
            when=_with_members,
            times=None,
        ),
        Fault(
            action="stall", seconds=3, path="/Groups", when=_with_members, times=None
        ),
    ],
    ids=["500-html", "timeout"],
)
def test_failing_group_list_falls_back_to_reading_groups_by_id(
    fault: Fault, caplog_info: pytest.LogCaptureFixture
) -> None:
    with FakeScim(_flat_users(), _flat_groups()) as fake:
        fake.fail(fault)
        reading = read_fake(fake, "retryAttempts=2", "requestTimeout=1")

    assert reading.groups == ["g1", "g2", "g3"]
    assert reading.relationships == FLAT
    fallback = [w for w in _warnings(caplog_info) if "Listing groups" in w]
    assert len(fallback) == 1
    assert fallback[0].startswith("Listing groups with their members failed (SCIM ")
    assert fallback[0].endswith(
        "listing them without members and reading each group by id instead"
    )
    assert len([r for r in fake.requests_to("/Groups") if _with_members(r)]) == 2
    assert set(_by_id(fake)) == {"/Groups/g1", "/Groups/g2", "/Groups/g3"}


# -- 9. Nested groups -----------------------------------------------------------


NESTED: list[Triple] = [
    ("g1", "g2", None),
    ("g2", "g3", None),
    ("u1", "g1", "direct"),
    ("u1", "g2", "indirect"),
    ("u1", "g3", "indirect"),
    ("u2", "g2", "direct"),
    ("u2", "g3", "indirect"),
]


@pytest.mark.parametrize(
    "nested",
    [
        member("g1", "Group"),
        member("g1", "group"),
        member(None, ref=f"{REF_BASE}/Groups/g1"),
        member("g1", ref=f"{REF_BASE}/Groups/g1"),
        member("g1"),
    ],
    ids=["type", "type-lowercase", "ref-only", "value-and-ref", "bare-value"],
)
@pytest.mark.parametrize("strategy", ["auto", "perGroup"])
def test_nested_groups_give_indirect_memberships(
    nested: dict[str, str], strategy: str
) -> None:
    groups = [
        group("g1", [member("u1", "User")]),
        group("g2", [nested, member("u2", "User")]),
        group("g3", [member("g2", "Group")]),
    ]
    with FakeScim([user("u1"), user("u2")], groups) as fake:
        reading = read_fake(fake, f"membershipStrategy={strategy}")

    assert reading.groups == ["g1", "g2", "g3"]
    assert reading.relationships == NESTED


def test_cyclic_nesting_terminates() -> None:
    groups = [
        group("g1", [member("u1", "User"), member("g2", "Group")]),
        group("g2", [member("u2", "User"), member("g1", "Group")]),
        group("g3", [member("u3", "User"), member("g3", "Group")]),
        group("g4", [member("g3", "Group")]),
    ]
    with FakeScim([user("u1"), user("u2"), user("u3")], groups) as fake:
        reading = read_fake(fake)

    assert reading.relationships == [
        ("g1", "g2", None),
        ("g2", "g1", None),
        ("g3", "g3", None),
        ("g3", "g4", None),
        ("u1", "g1", "direct"),
        ("u1", "g2", "indirect"),
        ("u2", "g1", "indirect"),
        ("u2", "g2", "direct"),
        ("u3", "g3", "direct"),
        ("u3", "g4", "indirect"),
    ]


def test_direct_membership_wins_over_indirect() -> None:
    groups = [
        group("g1", [member("u1", "User")]),
        group("g2", [member("g1", "Group"), member("u1", "User")]),
        group("g3", [member("g2", "Group")]),
    ]
    with FakeScim([user("u1")], groups) as fake:
        reading = read_fake(fake)

    assert reading.relationships == [
        ("g1", "g2", None),
        ("g2", "g3", None),
        ("u1", "g1", "direct"),
        ("u1", "g2", "direct"),
        ("u1", "g3", "indirect"),
    ]


def test_user_groups_attribute_keeps_indirect_memberships() -> None:
    # RFC 7643 §4.1.2: the users' "groups" lists direct and indirect memberships;
    # with no member lists anywhere it is the only source of the indirect ones.
    groups = [
        group("g1", [member("u1", "User")]),
        group("g2", [member("g1", "Group")]),
    ]
    with FakeScim(
        [user("u1")],
        groups,
        list_members="omit",
        get_members="omit",
        user_groups=True,
        user_groups_indirect=True,
    ) as fake:
        reading = read_fake(fake, "membershipStrategy=userGroups")

    assert reading.relationships == [
        ("u1", "g1", "direct"),
        ("u1", "g2", "indirect"),
    ]


# -- 10. Dangling members ------------------------------------------------------


def test_dangling_members_are_dropped_and_reported(
    caplog_info: pytest.LogCaptureFixture,
) -> None:
    groups = [
        group(
            "g1",
            [
                member("u1", "User"),
                member("gone-user", "User"),
                member("gone-group", "Group"),
            ],
        ),
        group("g2", [member("ghost"), member("u1")]),
    ]
    with FakeScim([user("u1")], groups) as fake:
        reading = read_fake(fake)

    assert reading.users == ["u1"]
    assert reading.groups == ["g1", "g2"]
    assert reading.relationships == [("u1", "g1", "direct"), ("u1", "g2", "direct")]
    assert [reading.attributes[g]["memberCount"] for g in reading.groups] == [1, 1]
    dangling = [w for w in _warnings(caplog_info) if "point at nothing" in w]
    assert len(dangling) == 1
    assert dangling[0].startswith(
        "3 × member references that point at nothing the server listed, dropped (e.g. "
    )
    for reference in ("gone-user", "gone-group", "ghost"):
        assert reference in dangling[0]


# -- Filters on a cursor-only server -------------------------------------------


def test_filter_strategy_on_a_cursor_only_server(
    caplog_info: pytest.LogCaptureFixture,
) -> None:
    # AWS IAM Identity Center pages only by cursor and shows members only through
    # filters: the probes must not send startIndex either.
    with FakeScim(
        _flat_users(),
        _flat_groups(),
        cursor_only=True,
        list_members="empty",
        get_members="empty",
    ) as fake:
        assert fake.service_provider_config is not None
        fake.service_provider_config["pagination"] = {"cursor": True, "index": False}
        reading = read_fake(fake)

    assert reading.relationships == FLAT
    assert _strategy_lines(caplog_info) == [
        "Membership strategy filter: only filter queries on users' groups find members"
    ]
    assert [r.query for r in fake.requests if "startIndex" in r.query] == []
