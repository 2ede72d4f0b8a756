"""The invented directories: deterministic, realistic, with the promised quirks."""

from __future__ import annotations

import pytest

from tests.support.directory import (
    ENTERPRISE_SCHEMA,
    Directory,
    example_directory,
)


def test_same_seed_gives_the_same_directory() -> None:
    assert example_directory(50, 8, seed=4, dangling=2) == example_directory(
        50, 8, seed=4, dangling=2
    )
    assert example_directory(50, 8, seed=4) != example_directory(50, 8, seed=5)


@pytest.mark.parametrize(("users", "groups"), [(0, 0), (1, 1), (3, 2), (7, 4)])
def test_tiny_directories_are_consistent(users: int, groups: int) -> None:
    directory = example_directory(users, groups, dangling=1 if groups else 0)
    assert len(directory.users) == users
    assert len(directory.groups) == groups
    for key in [*directory.users, *directory.groups]:
        assert all(reference in directory for reference in directory.references(key))


def test_dangling_needs_a_group() -> None:
    with pytest.raises(ValueError, match="at least one group"):
        example_directory(5, 0, dangling=1)


def test_users_look_like_a_real_directory() -> None:
    users = list(example_directory(300, 36).users.values())
    user_names = [user["userName"].lower() for user in users]
    assert len(set(user_names)) == 300, "userName is unique, case-insensitively"

    def share(predicate: object) -> float:
        assert callable(predicate)
        return sum(1 for user in users if predicate(user)) / len(users)

    assert 0.8 < share(lambda u: "displayName" in u) < 1
    assert 0 < share(lambda u: u.get("active") is False) < 0.2
    assert 0 < share(lambda u: "active" not in u) < 0.1
    with_primary = share(
        lambda u: sum(e.get("primary") is True for e in u.get("emails", [])) == 1
    )
    without_primary = share(
        lambda u: u.get("emails") and not any(e.get("primary") for e in u["emails"])
    )
    assert 0.7 < with_primary < 1
    assert 0.05 < without_primary < 0.3
    assert share(lambda u: len(u.get("emails", [])) == 2) > 0.1
    for user in users:
        enterprise = user[ENTERPRISE_SCHEMA]
        assert {"employeeNumber", "costCenter", "organization", "department"} <= set(
            enterprise
        )
        assert {"givenName", "familyName", "formatted"} == set(user["name"])
        for key in ("title", "userType", "preferredLanguage", "locale", "timezone"):
            assert isinstance(user[key], str)


def test_managers_are_other_users() -> None:
    directory = example_directory(100, 5)
    managed = {
        key: user[ENTERPRISE_SCHEMA]["manager"]["value"]
        for key, user in directory.users.items()
        if "manager" in user[ENTERPRISE_SCHEMA]
    }
    assert len(managed) > 80
    assert all(manager in directory.users for manager in managed.values())
    assert all(key != manager for key, manager in managed.items())


def test_non_ascii_names_are_present() -> None:
    users = example_directory(40, 4).users.values()
    names = {user["name"]["formatted"] for user in users}
    assert "Renée Lefèvre" in names
    assert "Jürgen Müller" in names
    assert any("日本" in name for name in names)
    assert all(user["userName"].isascii() for user in users)


def test_groups_have_a_long_tail_nesting_a_cycle_and_dangling_members() -> None:
    directory = example_directory(300, 36, dangling=2)
    sizes = sorted(
        sum(1 for m in group.get("members", []) if m["type"] == "User")
        for group in directory.groups.values()
    )
    assert sizes[0] == 0
    assert sum(1 for size in sizes if size == 0) >= 3
    assert sizes[-1] > 100
    assert sum(1 for size in sizes if size <= 8) > len(sizes) / 3

    nested = directory.group_memberships()
    children = {child for child, _ in nested}
    assert 3 <= len(children) <= 8  # about 10 % plus the two of the cycle
    assert any((parent, child) in nested for child, parent in nested)
    for child, parent in nested:
        members = directory.groups[parent]["members"]
        assert {"value": child, "type": "Group"} in members

    assert len(directory.dangling) == 2
    values = [
        member["value"]
        for group in directory.groups.values()
        for member in group.get("members", [])
    ]
    assert all(value in values for value in directory.dangling)
    assert not directory.dangling & set(directory.users)
    known = set(directory.users) | set(directory.groups) | directory.dangling
    assert set(values) <= known


def test_memberships_are_read_from_members() -> None:
    directory = Directory(
        users={"a": {}, "b": {}},
        groups={
            "g": {"members": [{"value": "a"}, {"value": "h"}, {"value": "x"}]},
            "h": {"members": [{"value": "b"}, {"value": "g"}]},
        },
        dangling={"x"},
    )
    assert directory.user_memberships() == {("a", "g"), ("b", "h")}
    assert directory.group_memberships() == {("h", "g"), ("g", "h")}
    assert directory.references("g") == ["a", "h"]
    assert directory.references("a") == []
