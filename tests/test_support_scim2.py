"""The scim2-server test harness: seeding, auth, paging and faults, over HTTP."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import BASIC_CREDENTIALS, BEARER_TOKEN, MakeScim2Server
from tests.support import scim2
from tests.support.directory import (
    ENTERPRISE_SCHEMA,
    GROUP_SCHEMA,
    USER_SCHEMA,
    Directory,
    SeededDirectory,
    example_directory,
)
from tests.support.scim2 import Scim2Server

ROOT = Path(__file__).parents[1]
BEARER = {"Authorization": f"Bearer {BEARER_TOKEN}"}
PAGINATION = {
    "cursor": True,
    "index": True,
    "defaultPaginationMethod": "index",
    "defaultPageSize": 10,
    "maxPageSize": 25,
    "cursorTimeout": 600,
}


def _basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _list(
    base_url: str, endpoint: str, headers: dict[str, str]
) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    start = 1
    while True:
        response = requests.get(
            f"{base_url}/{endpoint}",
            params={"startIndex": start, "count": 50},
            headers=headers,
            timeout=10,
        )
        response.raise_for_status()
        resources = response.json().get("Resources", [])
        if not resources:
            return found
        found.update((resource["id"], resource) for resource in resources)
        start += len(resources)


def _memberships(
    users: dict[str, Any], groups: dict[str, Any]
) -> tuple[set[tuple[str, str]], set[tuple[str, str]], set[str]]:
    user_pairs, group_pairs, dangling = set(), set(), set()
    for group_id, group in groups.items():
        for member in group.get("members", []):
            value = member["value"]
            if value in users:
                assert member["type"] == "User"
                user_pairs.add((value, group_id))
            elif value in groups:
                assert member["type"] == "Group"
                group_pairs.add((value, group_id))
            else:
                dangling.add(value)
    return user_pairs, group_pairs, dangling


def _with_ids(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, list):
        return [_with_ids(item, ids) for item in value]
    if not isinstance(value, dict):
        return value
    translated = {key: _with_ids(item, ids) for key, item in value.items()}
    if value.get("value") in ids:
        translated["value"] = ids[value["value"]]
    return translated


def _sorted_members(resource: dict[str, Any]) -> dict[str, Any]:
    # Members that close a nesting cycle are added after the POST, so at the end.
    members = sorted(resource.get("members", []), key=lambda m: m["value"])
    return {**resource, "members": members}


def _assert_served(
    server: Scim2Server, seeded: SeededDirectory, headers: dict[str, str]
) -> None:
    users = _list(server.base_url, "Users", headers)
    groups = _list(server.base_url, "Groups", headers)
    assert users == seeded.users
    assert groups == seeded.groups
    assert _memberships(users, groups) == (
        seeded.user_memberships,
        seeded.group_memberships,
        seeded.dangling,
    )


# -- Seeding -------------------------------------------------------------------


def test_seeding_stores_exactly_the_directory(
    scim2_server_bearer: tuple[Scim2Server, SeededDirectory],
) -> None:
    server, seeded = scim2_server_bearer
    directory = example_directory(users=120, groups=15, dangling=3)

    _assert_served(server, seeded, BEARER)

    assert len(seeded.users) == 120
    assert len(seeded.groups) == 15
    assert len(seeded.dangling) == 3
    assert seeded.ids.keys() == directory.users.keys() | directory.groups.keys()
    for key, posted in [*directory.users.items(), *directory.groups.items()]:
        stored = dict(
            seeded.users.get(seeded.ids[key]) or seeded.groups[seeded.ids[key]]
        )
        assert stored.pop("id") == seeded.ids[key]
        assert stored.pop("meta")["resourceType"] in ("User", "Group")
        # Stored as posted, references translated: no "$ref" or "display" added.
        assert _sorted_members(stored) == _sorted_members(_with_ids(posted, seeded.ids))
    assert {user["schemas"][0] for user in seeded.users.values()} == {USER_SCHEMA}
    assert {group["schemas"][0] for group in seeded.groups.values()} == {GROUP_SCHEMA}


def test_seeded_directory_has_the_promised_shape(
    scim2_server_bearer: tuple[Scim2Server, SeededDirectory],
) -> None:
    _, seeded = scim2_server_bearer
    names = " ".join(user["name"]["formatted"] for user in seeded.users.values())
    for text in ("é", "ü", "日本"):
        assert text in names
    child_parent = seeded.group_memberships
    assert any((parent, child) in child_parent for child, parent in child_parent)
    empty = [group for group in seeded.groups.values() if "members" not in group]
    assert empty, "some groups have no members, and then no members key"
    dangling_holders = {
        group_id
        for group_id, group in seeded.groups.items()
        for member in group.get("members", [])
        if member["value"] in seeded.dangling
    }
    assert dangling_holders


def test_seeding_resolves_references_across_batches_and_cycles(
    make_scim2_server: MakeScim2Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tiny bulk limits force many batches; tiny member chunks force PATCHes.
    monkeypatch.setattr(scim2, "MEMBERS_PER_OPERATION", 3)
    server = make_scim2_server(bulk={"maxOperations": 4, "maxPayloadSize": 6000})
    users = {
        f"u{n}": {"schemas": [USER_SCHEMA], "userName": f"person{n}"} for n in range(12)
    }
    # u0 and u1 manage each other: a cycle through the enterprise extension.
    for key, manager in (("u0", "u1"), ("u1", "u0"), ("u5", "u11")):
        users[key]["schemas"] = [USER_SCHEMA, ENTERPRISE_SCHEMA]
        users[key][ENTERPRISE_SCHEMA] = {"manager": {"value": manager}}

    def group(*members: str) -> dict[str, Any]:
        entries = [
            {"value": m, "type": "Group" if m.startswith("g") else "User"}
            for m in members
        ]
        return {"schemas": [GROUP_SCHEMA], "displayName": "x", "members": entries}

    groups = {
        "g-big": group(*users, "g-self", "ghost-1"),
        "g-self": group("g-self", "u3"),  # contains itself
        "g-a": group("g-b", "u4"),  # a -> b -> c -> a
        "g-b": group("g-c"),
        "g-c": group("g-a", "g-big"),
        "g-empty": {"schemas": [GROUP_SCHEMA], "displayName": "empty"},
    }
    directory = Directory(users, groups, {"ghost-1"})

    seeded = server.seed(directory)

    _assert_served(server, seeded, {})
    ids = seeded.ids
    assert len(seeded.user_memberships) == 12 + 2
    assert seeded.group_memberships == {
        (ids[child], ids[parent])
        for child, parent in [
            ("g-self", "g-big"),
            ("g-self", "g-self"),
            ("g-b", "g-a"),
            ("g-c", "g-b"),
            ("g-a", "g-c"),
            ("g-big", "g-c"),
        ]
    }
    managers = {
        user_id: user[ENTERPRISE_SCHEMA]["manager"]["value"]
        for user_id, user in seeded.users.items()
        if ENTERPRISE_SCHEMA in user
    }
    assert managers == {
        ids["u0"]: ids["u1"],
        ids["u1"]: ids["u0"],
        ids["u5"]: ids["u11"],
    }
    bulk_posts = [r for r in server.requests if r == ("POST", "/v2/Bulk")]
    assert bulk_posts == [], "seeding requests are not recorded"


def test_seeding_without_read_back_returns_the_posted_resources(
    make_scim2_server: MakeScim2Server,
) -> None:
    directory = example_directory(users=10, groups=4, seed=7, dangling=1)
    server = make_scim2_server()

    seeded = server.seed(directory, read_back=False)

    served_users = _list(server.base_url, "Users", {})
    assert served_users.keys() == seeded.users.keys()
    for user_id, user in seeded.users.items():
        assert "meta" not in user
        assert user["userName"] == served_users[user_id]["userName"]


# -- Authentication ------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong-token"}, 401),
        ({"Authorization": f"bearer {BEARER_TOKEN}"}, 200),
        (_basic("alice", BEARER_TOKEN), 401),
        (BEARER, 200),
    ],
    ids=["none", "wrong-token", "lowercase-scheme", "basic", "right-token"],
)
def test_bearer_token_is_enforced(
    scim2_server_bearer: tuple[Scim2Server, SeededDirectory],
    headers: dict[str, str],
    status: int,
) -> None:
    server, _ = scim2_server_bearer
    response = requests.get(f"{server.base_url}/Users", headers=headers, timeout=10)
    assert response.status_code == status
    if status == 401:
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="SCIM"'
        assert response.json()["status"] == "401"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        (_basic("alice", "wrong"), 401),
        (_basic("bob", BASIC_CREDENTIALS[1]), 401),
        ({"Authorization": "Basic not-base64!"}, 401),
        ({"Authorization": f"Bearer {BASIC_CREDENTIALS[1]}"}, 401),
        (_basic(*BASIC_CREDENTIALS), 200),
    ],
    ids=["none", "wrong-password", "wrong-user", "garbage", "bearer", "right"],
)
def test_basic_auth_is_enforced(
    scim2_server_basic: tuple[Scim2Server, SeededDirectory],
    headers: dict[str, str],
    status: int,
) -> None:
    server, _ = scim2_server_basic
    response = requests.get(f"{server.base_url}/Groups", headers=headers, timeout=10)
    assert response.status_code == status
    if status == 401:
        assert response.headers["WWW-Authenticate"] == 'Basic realm="SCIM"'


def test_basic_server_serves_its_directory(
    scim2_server_basic: tuple[Scim2Server, SeededDirectory],
) -> None:
    server, seeded = scim2_server_basic
    _assert_served(server, seeded, _basic(*BASIC_CREDENTIALS))
    assert len(seeded.users) == 30


def test_service_provider_config_needs_no_credentials(
    scim2_server_bearer: tuple[Scim2Server, SeededDirectory],
) -> None:
    server, _ = scim2_server_bearer
    response = requests.get(f"{server.base_url}/ServiceProviderConfig", timeout=10)
    assert response.status_code == 200
    schemes = [scheme["type"] for scheme in response.json()["authenticationSchemes"]]
    assert schemes == ["oauthbearertoken"]


def test_server_without_credentials_accepts_everything(
    make_scim2_server: MakeScim2Server,
) -> None:
    server = make_scim2_server()
    response = requests.get(
        f"{server.base_url}/Users", headers={"Authorization": "Bearer x"}, timeout=10
    )
    assert response.status_code == 200
    assert response.json()["totalResults"] == 0


# -- Paging ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def paged_server() -> Iterator[Scim2Server]:
    with Scim2Server(pagination=PAGINATION) as server:
        server.seed(example_directory(users=60, groups=3, seed=3))
        yield server


def test_pagination_block_caps_pages(paged_server: Scim2Server) -> None:
    url = f"{paged_server.base_url}/Users"

    capped = requests.get(url, params={"count": 100}, timeout=10).json()
    default = requests.get(url, timeout=10).json()
    config = requests.get(f"{paged_server.base_url}/ServiceProviderConfig", timeout=10)

    assert (capped["totalResults"], capped["itemsPerPage"]) == (60, 25)
    assert len(capped["Resources"]) == 25
    assert len(default["Resources"]) == 10
    assert config.json()["pagination"] == PAGINATION


def test_index_paging_covers_every_user_once(paged_server: Scim2Server) -> None:
    assert paged_server.seeded is not None
    before = len(paged_server.requests)
    users = _list(paged_server.base_url, "Users", {})
    assert users.keys() == paged_server.seeded.users.keys()
    pages = paged_server.requests[before:]
    assert len(pages) == 4  # count=50 gets 25 + 25 + 10, then an empty page


def test_cursor_paging_walks_every_user_once(paged_server: Scim2Server) -> None:
    assert paged_server.seeded is not None
    url = f"{paged_server.base_url}/Users"
    seen: list[str] = []
    cursor = ""
    for _ in range(10):
        page = requests.get(url, params={"cursor": cursor, "count": 20}, timeout=10)
        body = page.json()
        assert "startIndex" not in body
        seen += [resource["id"] for resource in body["Resources"]]
        if "nextCursor" not in body:
            break
        cursor = body["nextCursor"]
    assert sorted(seen) == sorted(paged_server.seeded.users)
    assert len(seen) == 60


def test_cursor_only_server_pages_by_cursor_by_default(
    make_scim2_server: MakeScim2Server,
) -> None:
    cursor_only = {**PAGINATION, "index": False, "defaultPaginationMethod": "cursor"}
    server = make_scim2_server(
        example_directory(users=30, groups=2), pagination=cursor_only
    )
    url = f"{server.base_url}/Users"

    first = requests.get(url, timeout=10).json()
    by_index = requests.get(url, params={"startIndex": 1}, timeout=10)

    assert len(first["Resources"]) == 10
    assert first["nextCursor"]
    assert by_index.status_code == 501
    assert server.seeded is not None
    assert len(server.seeded.users) == 30


# -- Faults and request log --------------------------------------------------------


def test_break_after_hangs_up_from_the_nth_list_request(
    make_scim2_server: MakeScim2Server,
) -> None:
    server = make_scim2_server(example_directory(users=12, groups=2))
    url = f"{server.base_url}/Users"

    def page(start: int) -> requests.Response:
        return requests.get(url, params={"startIndex": start, "count": 5}, timeout=10)

    server.break_after("Users", 3)
    assert page(1).status_code == 200
    assert requests.get(f"{server.base_url}/Groups", timeout=10).ok
    assert page(6).status_code == 200
    with pytest.raises(requests.ConnectionError):
        page(11)
    with pytest.raises(requests.ConnectionError):
        page(11)
    assert server.seeded is not None
    some_id = next(iter(server.seeded.users))
    assert requests.get(f"{url}/{some_id}", timeout=10).ok, "only lists break"

    server.heal()
    assert page(11).status_code == 200
    assert server.requests[:2] == [
        ("GET", "/v2/Users?startIndex=1&count=5"),
        ("GET", "/v2/Groups"),
    ]
    assert len(server.requests) == 7


def test_break_after_one_breaks_the_very_next_request(
    make_scim2_server: MakeScim2Server,
) -> None:
    server = make_scim2_server()
    server.break_after("Groups", 1)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.base_url}/Groups", timeout=10)
    with pytest.raises(ValueError, match="at least 1"):
        server.break_after("Groups", 0)


def test_context_manager_releases_the_port() -> None:
    with Scim2Server() as server:
        url = server.base_url
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/v2")
        assert requests.get(f"{url}/ServiceProviderConfig", timeout=10).ok
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/ServiceProviderConfig", timeout=10)


# -- Manual use ------------------------------------------------------------------


def test_module_serves_a_seeded_example_directory() -> None:
    command = [
        sys.executable,
        "-m",
        "tests.support.scim2",
        "--port",
        "0",
        "--bearer-token",
        "manual-token",
        "--example-users",
        "15",
        "--example-groups",
        "4",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        users = _list(base_url, "Users", {"Authorization": "Bearer manual-token"})
        assert len(users) == 15
    finally:
        process.terminate()
        process.communicate(timeout=10)
    assert process.returncode == 0
