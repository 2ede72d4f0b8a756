"""Invented SCIM directories: users, groups and memberships for the tests.

A `Directory` is generated offline; its resources reference each other by key
(``user-0001``, ``group-001``) in member and manager ``value``s. Seeding it on a
server (`tests.support.scim2.Scim2Server.seed`) replaces the keys by the ids the
server assigns and returns a `SeededDirectory` that speaks in server ids only.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE_SCHEMA = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

Resource = dict[str, Any]

_GIVEN_NAMES = [
    "Alice", "Bram", "Chloe", "Daan", "Elena", "Farid", "Greta", "Hugo", "Ines",
    "Jonas", "Kira", "Lars", "Mila", "Noah", "Olivia", "Pieter", "Quinn", "Rosa",
    "Sami", "Tessa", "Umar", "Vera", "Wout", "Xander", "Yara", "Zeno", "Amara",
    "Bilal", "Clara", "Dries", "Eva", "Femke", "Gabriel", "Hanna", "Ivo", "Julia",
]  # fmt: skip
_FAMILY_NAMES = [
    "Peeters", "Janssens", "Maes", "Jacobs", "Mertens", "Willems", "Claes",
    "Goossens", "Wouters", "De Smet", "Dubois", "Lambert", "Martin", "Dupont",
    "Hermans", "Aerts", "Smith", "Garcia", "Novak", "Kowalski", "Rossi", "Silva",
    "Nielsen", "Olsen", "Brennan", "Okafor", "Haddad", "Costa", "Varga", "Kaya",
]  # fmt: skip
# (given name, family name, ASCII login, family name first?)
_NON_ASCII_PEOPLE = [
    ("Renée", "Lefèvre", "renee.lefevre", False),
    ("Jürgen", "Müller", "juergen.mueller", False),
    ("翔", "日本", "sho.nihon", True),
    ("Zoë", "Brontë", "zoe.bronte", False),
    ("José", "Núñez", "jose.nunez", False),
    ("花子", "山田", "hanako.yamada", True),
    ("Søren", "Kierkegård", "soren.kierkegard", False),
    ("Ünal", "Çelik", "unal.celik", False),
]
_DEPARTMENTS = {
    "Engineering": ["Software Engineer", "Site Reliability Engineer", "Architect"],
    "Sales": ["Account Executive", "Sales Engineer", "Sales Manager"],
    "Finance": ["Accountant", "Controller", "Financial Analyst"],
    "Human Resources": ["HR Business Partner", "Recruiter"],
    "Support": ["Support Agent", "Support Lead"],
    "Legal": ["Counsel", "Paralegal"],
    "Marketing": ["Marketing Manager", "Content Writer", "Designer"],
}
_DIVISIONS = {
    "Engineering": "Product",
    "Support": "Product",
    "Sales": "Commercial",
    "Marketing": "Commercial",
    "Finance": "Corporate",
    "Human Resources": "Corporate",
    "Legal": "Corporate",
}
_LOCALES = [
    ("en-US", "America/New_York"),
    ("en-GB", "Europe/London"),
    ("nl-BE", "Europe/Brussels"),
    ("fr-BE", "Europe/Brussels"),
    ("de-DE", "Europe/Berlin"),
    ("ja-JP", "Asia/Tokyo"),
]
_GROUP_NAMES = [
    "All Staff", "Engineering", "Platform Team", "Sales EMEA", "Sales Americas",
    "Finance", "Payroll Admins", "HR", "Support Tier 1", "Support Tier 2",
    "Legal", "Marketing", "VPN Users", "GitHub Admins", "Okta Admins",
    "AWS Production", "AWS Read Only", "Slack Guests", "Contractors", "Interns",
    "Board", "Security Champions", "On-call", "Release Managers",
]  # fmt: skip


@dataclass
class Directory:
    """An invented directory, before it is stored on a server.

    ``users`` and ``groups`` map a key to a SCIM resource without ``id``. A member
    or manager ``value`` that is a key of ``users`` or ``groups`` references that
    resource; any other member value is in ``dangling`` and references nothing.
    """

    users: dict[str, Resource]
    groups: dict[str, Resource]
    dangling: set[str] = field(default_factory=set)

    def resource(self, key: str) -> Resource:
        """The user or group of a key."""
        return self.users[key] if key in self.users else self.groups[key]

    def references(self, key: str) -> list[str]:
        """Keys of the resources a user's manager or a group's members refer to."""
        resource = self.resource(key)
        values = [member["value"] for member in resource.get("members", [])]
        manager = resource.get(ENTERPRISE_SCHEMA, {}).get("manager")
        if manager is not None:
            values.append(manager["value"])
        return [value for value in values if value in self]

    def __contains__(self, key: object) -> bool:
        return key in self.users or key in self.groups

    def user_memberships(self) -> set[tuple[str, str]]:
        """Pairs (user key, group key) of direct user members."""
        return {
            (value, group_key)
            for group_key, value in self._member_values()
            if value in self.users
        }

    def group_memberships(self) -> set[tuple[str, str]]:
        """Pairs (child group key, parent group key) of nested groups."""
        return {
            (value, group_key)
            for group_key, value in self._member_values()
            if value in self.groups
        }

    def _member_values(self) -> list[tuple[str, str]]:
        return [
            (group_key, member["value"])
            for group_key, group in self.groups.items()
            for member in group.get("members", [])
        ]


@dataclass
class SeededDirectory:
    """A directory as a server stores it, keyed by the ids the server assigned."""

    users: dict[str, Resource]
    """Server id → User resource, as read back from the server."""
    groups: dict[str, Resource]
    """Server id → Group resource, as read back from the server."""
    user_memberships: set[tuple[str, str]]
    """(user id, group id) for each direct user member."""
    group_memberships: set[tuple[str, str]]
    """(child group id, parent group id) for each nested group."""
    dangling: set[str]
    """Member values that point at no resource."""
    ids: dict[str, str] = field(default_factory=dict)
    """Directory key → server id."""

    @classmethod
    def of(
        cls,
        directory: Directory,
        ids: dict[str, str],
        users: dict[str, Resource],
        groups: dict[str, Resource],
    ) -> SeededDirectory:
        """Translate the expectations of a directory into server ids."""
        return cls(
            users=users,
            groups=groups,
            user_memberships={
                (ids[user], ids[group]) for user, group in directory.user_memberships()
            },
            group_memberships={
                (ids[child], ids[parent])
                for child, parent in directory.group_memberships()
            },
            dangling=set(directory.dangling),
            ids=dict(ids),
        )


def example_directory(
    users: int, groups: int, seed: int = 1, dangling: int = 0
) -> Directory:
    """Generate a realistic directory, the same one for the same arguments.

    Groups have a long tail of member counts (a few big, many small, some empty);
    about 10 % are nested in another group, two groups contain each other when
    there are at least four, and ``dangling`` members point at ids that exist
    nowhere.
    """
    if dangling and not groups:
        msg = "dangling members need at least one group"
        raise ValueError(msg)
    rng = random.Random(seed)
    user_resources = _users(rng, users)
    group_resources = _groups(rng, groups, list(user_resources))
    dangling_values = _add_dangling(rng, group_resources, dangling)
    return Directory(user_resources, group_resources, dangling_values)


def _users(rng: random.Random, count: int) -> dict[str, Resource]:
    users: dict[str, Resource] = {}
    logins: set[str] = set()
    for index in range(count):
        given, family, login, family_first = _person(rng, index)
        while login in logins:
            login = f"{login}{rng.randrange(2, 100)}"
        logins.add(login)
        key = f"user-{index + 1:04d}"
        users[key] = _user(rng, index, list(users), given, family, login, family_first)
    return users


def _person(rng: random.Random, index: int) -> tuple[str, str, str, bool]:
    # Users 2-4 always carry é, ü and 日本; a few more non-ASCII names follow.
    special = index - 1 if 1 <= index <= 3 else None
    if index > 3 and index % 29 == 0:
        special = rng.randrange(len(_NON_ASCII_PEOPLE))
    if special is not None:
        return _NON_ASCII_PEOPLE[special]
    given = rng.choice(_GIVEN_NAMES)
    family = rng.choice(_FAMILY_NAMES)
    login = f"{given}.{family}".lower().replace(" ", "")
    return given, family, login, False


def _user(
    rng: random.Random,
    index: int,
    earlier: list[str],
    given: str,
    family: str,
    login: str,
    family_first: bool,
) -> Resource:
    formatted = f"{family} {given}" if family_first else f"{given} {family}"
    department = rng.choice(list(_DEPARTMENTS))
    language, timezone = rng.choice(_LOCALES)
    user: Resource = {
        "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA],
        "externalId": _uuid(rng),
        "userName": f"{login}@example.com",
        "name": {"givenName": given, "familyName": family, "formatted": formatted},
        "title": rng.choice(_DEPARTMENTS[department]),
        "userType": rng.choices(["Employee", "Contractor", "Intern"], [16, 3, 1])[0],
        "preferredLanguage": language,
        "locale": language,
        "timezone": timezone,
    }
    if rng.random() < 0.9:
        user["displayName"] = formatted
    if rng.random() < 0.97:
        user["active"] = rng.random() < 0.9
    emails = _emails(rng, login)
    if emails:
        user["emails"] = emails
    enterprise: Resource = {
        "employeeNumber": str(100000 + index),
        "costCenter": f"CC-{rng.randrange(1000, 10000)}",
        "organization": "Example Corp Japan" if family_first else "Example Corp",
        "division": _DIVISIONS[department],
        "department": department,
    }
    # Managers come earlier in the directory, so management is a tree.
    if earlier and rng.random() < 0.95:
        enterprise["manager"] = {"value": rng.choice(earlier[: max(1, index // 3)])}
    user[ENTERPRISE_SCHEMA] = enterprise
    return user


def _emails(rng: random.Random, login: str) -> list[Resource]:
    if rng.random() < 0.03:
        return []
    emails: list[Resource] = [{"value": f"{login}@example.com", "type": "work"}]
    if rng.random() < 0.3:
        emails.append({"value": f"{login}@mail.example.org", "type": "home"})
        rng.shuffle(emails)
    if rng.random() < 0.85:
        primary = next(email for email in emails if email["type"] == "work")
        primary["primary"] = True
    return emails


def _groups(
    rng: random.Random, count: int, user_keys: list[str]
) -> dict[str, Resource]:
    keys = [f"group-{index + 1:03d}" for index in range(count)]
    sizes = _group_sizes(rng, count, len(user_keys))
    groups: dict[str, Resource] = {}
    for index, key in enumerate(keys):
        name = _GROUP_NAMES[index % len(_GROUP_NAMES)]
        if index >= len(_GROUP_NAMES):
            name = f"{name} #{index // len(_GROUP_NAMES) + 1}"
        group: Resource = {
            "schemas": [GROUP_SCHEMA],
            "externalId": _uuid(rng),
            "displayName": name,
        }
        members = [
            {"value": user, "type": "User"}
            for user in rng.sample(user_keys, sizes[index])
        ]
        if members:
            group["members"] = members
        groups[key] = group
    for child, parent in _nesting(rng, keys):
        _insert_member(rng, groups[parent], {"value": child, "type": "Group"})
    return groups


def _group_sizes(rng: random.Random, groups: int, users: int) -> list[int]:
    big = max(1, round(groups * 0.1))
    empty = round(groups * 0.1) if groups >= 3 else 0
    medium = round(groups * 0.2)
    kinds = ["empty"] * empty + ["medium"] * medium
    kinds += ["small"] * (groups - big - len(kinds))
    rng.shuffle(kinds)
    # The big ones come first, so that "All Staff" is one of them.
    kinds = ["big"] * big + kinds
    bounds = {
        "big": (users * 2 // 5, users * 9 // 10),
        "medium": (users // 20, users // 6),
        "small": (1, 8),
        "empty": (0, 0),
    }
    sizes = []
    for kind in kinds[:groups]:
        low, high = bounds[kind]
        sizes.append(min(users, rng.randint(min(low, high), high)))
    return sizes


def _nesting(rng: random.Random, keys: list[str]) -> list[tuple[str, str]]:
    """Pairs (child, parent): a forest of nested groups plus one 2-cycle."""
    edges: list[tuple[str, str]] = []
    candidates = list(keys)
    if len(keys) >= 4:
        first, second = rng.sample(keys, 2)
        edges += [(first, second), (second, first)]
        candidates = [key for key in keys if key not in (first, second)]
    nested = max(1, round(len(keys) * 0.1)) if len(candidates) >= 2 else 0
    # A child is nested in a group that comes before it, so no other cycles.
    for child_index in sorted(rng.sample(range(1, len(candidates)), nested)):
        parent = candidates[rng.randrange(child_index)]
        edges.append((candidates[child_index], parent))
    return edges


def _add_dangling(
    rng: random.Random, groups: dict[str, Resource], count: int
) -> set[str]:
    holders = [group for group in groups.values() if group.get("members")]
    holders = holders or list(groups.values())
    values: set[str] = set()
    for _ in range(count):
        value = uuid.UUID(int=rng.getrandbits(128)).hex
        values.add(value)
        _insert_member(rng, rng.choice(holders), {"value": value, "type": "User"})
    return values


def _insert_member(rng: random.Random, group: Resource, member: Resource) -> None:
    members = group.setdefault("members", [])
    members.insert(rng.randrange(len(members) + 1), member)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))
