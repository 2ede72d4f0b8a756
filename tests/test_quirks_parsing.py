"""Lenient parsing of resources as real servers send them, over real HTTP."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.support.fake_scim import FakeScim, group, member, read_fake, user

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.fixture
def caplog_info(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="elimity_scim")
    return caplog


def test_string_booleans_are_read(caplog_info: pytest.LogCaptureFixture) -> None:
    users = [
        user("u1", active="True"),
        user("u2", active="false"),
        user("u3", active=True),
        user("u4"),
    ]
    with FakeScim(users) as fake:
        reading = read_fake(fake)

    assert [reading.attributes[u].get("active") for u in reading.users] == [
        True,
        False,
        True,
        None,
    ]
    assert "2 × booleans sent as strings" in _warnings(caplog_info)


def test_several_primary_emails_take_the_first(
    caplog_info: pytest.LogCaptureFixture,
) -> None:
    emails = [
        {"value": "work@example.test", "type": "work"},
        {"value": "first@example.test", "primary": "true"},
        {"value": "second@example.test", "primary": True},
    ]
    users = [
        user("u1", emails=emails),
        user("u2", emails=[{"value": "only@example.test", "primary": False}]),
        user("u3", emails=[{"primary": True}, {"value": "fallback@example.test"}]),
    ]
    with FakeScim(users) as fake:
        reading = read_fake(fake)

    assert [reading.attributes[u].get("email") for u in reading.users] == [
        "first@example.test",
        "only@example.test",
        "fallback@example.test",
    ]
    assert "1 × users with several primary emails (the first one is used)" in _warnings(
        caplog_info
    )


def test_missing_schemas_and_unknown_extensions_are_tolerated() -> None:
    bare = {"id": "u1", "userName": "bare@example.test"}
    extensions: dict[str, Any] = {
        ENTERPRISE: {"department": "Finance", "manager": {"value": "u1"}},
        "urn:example:params:scim:schemas:extension:acme:1.0:User": {
            "badge": {"colour": "blue", "floors": [1, 2]},
            "clearance": None,
        },
        "x-vendor-flags": [True, "beta"],
    }
    extended = user(
        "u2",
        displayName="Extended Person",
        schemas=[
            "urn:ietf:params:scim:schemas:core:2.0:User",
            ENTERPRISE,
            "urn:example:params:scim:schemas:extension:acme:1.0:User",
        ],
        **extensions,
    )
    bare_group = {"id": "g1", "displayName": "No Schemas", "members": [{"value": "u1"}]}
    with FakeScim([bare, extended], [bare_group]) as fake:
        reading = read_fake(fake)

    assert reading.users == ["u1", "u2"]
    assert reading.attributes["u1"] == {"userName": "bare@example.test"}
    assert reading.attributes["u2"] == {
        "userName": "u2@example.test",
        "displayName": "Extended Person",
        "department": "Finance",
        "managerId": "u1",
    }
    assert reading.relationships == [("u1", "g1", "direct")]


def test_resources_without_id_are_skipped_with_a_warning(
    caplog_info: pytest.LogCaptureFixture,
) -> None:
    users = [
        user("u1"),
        {"userName": "no-id@example.test"},
        {"id": "", "userName": "empty-id@example.test"},
        {"id": None, "userName": "null-id@example.test"},
        user("u2"),
    ]
    groups = [group("g1", [member("u1", "User")]), {"displayName": "No id group"}]
    with FakeScim(users, groups) as fake:
        reading = read_fake(fake)

    assert reading.users == ["u1", "u2"]
    assert reading.groups == ["g1"]
    assert reading.relationships == [("u1", "g1", "direct")]
    warnings = _warnings(caplog_info)
    assert "3 × Users without an id, skipped" in warnings
    assert "1 × Groups without an id, skipped" in warnings


def test_a_page_of_only_id_less_resources_is_not_broken_paging(
    caplog_info: pytest.LogCaptureFixture,
) -> None:
    # The page at startIndex 3 holds two resources without id: nothing repeats.
    users = [
        user("u1"),
        user("u2"),
        {"userName": "no-id@example.test"},
        {"id": "", "userName": "empty-id@example.test"},
        user("u3"),
    ]
    with FakeScim(users, page_cap=2) as fake:
        reading = read_fake(fake)

    assert reading.users == ["u1", "u2", "u3"]
    assert "2 × Users without an id, skipped" in _warnings(caplog_info)


def test_numbers_as_ids_and_attribute_names_in_other_case() -> None:
    users: list[dict[str, Any]] = [
        {"ID": 101, "UserName": "numbered@example.test", "Active": True},
        {"id": "u2", "USERNAME": "shouty@example.test"},
    ]
    groups = [
        {
            "Id": "g1",
            "DisplayName": "Mixed Case",
            "Members": [{"Value": 101, "Type": "User"}, {"VALUE": "u2"}],
        }
    ]
    with FakeScim(users, groups) as fake:
        reading = read_fake(fake)

    assert reading.users == ["101", "u2"]
    assert reading.attributes["101"] == {
        "userName": "numbered@example.test",
        "active": True,
    }
    assert reading.groups == ["g1"]
    assert reading.relationships == [("101", "g1", "direct"), ("u2", "g1", "direct")]


def test_list_entries_that_are_not_objects_are_skipped(
    caplog_info: pytest.LogCaptureFixture,
) -> None:
    users: list[Any] = [user("u1"), "u-as-text", None, 7, user("u2")]
    with FakeScim(users) as fake:
        reading = read_fake(fake)

    assert reading.users == ["u1", "u2"]
    assert "3 × list entries of Users that are not objects, skipped" in _warnings(
        caplog_info
    )


def test_paging_numbers_as_strings_are_read(
    caplog_info: pytest.LogCaptureFixture,
) -> None:
    with FakeScim([user(f"u{n}") for n in range(1, 6)], page_cap=2) as fake:
        fake.numbers_as_strings = True
        reading = read_fake(fake)

    assert reading.users == [f"u{n}" for n in range(1, 6)]
    assert any(
        w.endswith("× paging fields sent as strings") for w in _warnings(caplog_info)
    )
