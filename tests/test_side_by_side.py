"""Group pages are fetched alongside the user pages, and nothing else changes.

Users are recorded before groups (memberships point at user numbers), but the
first group pages are requested while users are still being listed and kept as
bytes until the group listing takes them (`elimity_scim.prefetch`). These tests
run against `FakeScim` on 127.0.0.1: what is read equals a concurrency 1 reading,
every group request is sent once, and a failure stops the fetching ahead.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from elimity_scim.client import ClientSettings, Paging, ScimClient
from elimity_scim.errors import ScimRequestError
from elimity_scim.prefetch import query_key
from tests.support.fake_scim import (
    FakeScim,
    Fault,
    Resource,
    group,
    member,
    read_fake,
    scim_error,
    user,
)

USERS = 40
GROUPS = 12


def _members(n: int) -> list[str]:
    # Three users per group; group n also holds group n - 1.
    return [f"u{(n * 7 + k) % USERS + 1}" for k in range(3)]


def _expected() -> list[tuple[str, str, str | None]]:
    expected: list[tuple[str, str, str | None]] = []
    below: set[str] = set()
    for n in range(1, GROUPS + 1):
        direct = set(_members(n))
        expected += [(u, f"g{n}", "direct") for u in direct]
        expected += [(u, f"g{n}", "indirect") for u in below - direct]
        below |= direct
        if n > 1:
            expected.append((f"g{n - 1}", f"g{n}", None))
    return sorted(expected, key=repr)


def _directory() -> tuple[list[Resource], list[Resource]]:
    users = [user(f"u{n}") for n in range(1, USERS + 1)]
    groups = []
    for n in range(1, GROUPS + 1):
        members = [member(u, "User") for u in _members(n)]
        if n > 1:
            members.append(member(f"g{n - 1}", "Group"))
        groups.append(group(f"g{n}", members))
    return users, groups


def _fake(paging: str, **knobs: Any) -> FakeScim:
    users, groups = _directory()
    fake = FakeScim(users, groups, **knobs)
    if paging == "cursor":
        fake.cursor_only = True
        assert fake.service_provider_config is not None
        fake.service_provider_config["pagination"] = {"cursor": True, "index": False}
    return fake


def _slow_users(seconds: float = 0.02) -> Fault:
    # Users answer slowly, so that the user listing is still under way when
    # group pages could be asked for.
    return Fault(action="stall", seconds=seconds, path="/Users", times=None)


def _order(fake: FakeScim) -> list[str]:
    return [request.path for request in fake.list_requests()]


@pytest.mark.parametrize("paging", ["index", "cursor"])
def test_group_pages_are_fetched_while_users_are_listed(paging: str) -> None:
    settings = ("pageSize=4", "groupPageSize=3")
    with _fake(paging) as fake:
        fake.fail(_slow_users())
        ahead = read_fake(fake, *settings, "concurrency=4")
    with _fake(paging) as sequential_fake:
        sequential_fake.fail(_slow_users())
        sequential = read_fake(sequential_fake, *settings, "concurrency=1")

    order = _order(fake)
    last_user = max(i for i, path in enumerate(order) if path == "/Users")
    first_group = order.index("/Groups")
    assert first_group < last_user
    # Concurrency 1 fetches nothing ahead: every group request after the users.
    order = _order(sequential_fake)
    assert order.index("/Groups") > max(
        i for i, path in enumerate(order) if path == "/Users"
    )
    # What is read does not depend on it.
    assert ahead == sequential
    assert len(ahead.users) == USERS
    assert len(ahead.groups) == GROUPS
    assert ahead.relationships == _expected()
    # A page fetched ahead is taken by the listing, not asked for again.
    queries = [query_key(r.query) for r in fake.requests_to("/Groups")]
    assert len(queries) == len(set(queries))
    assert len(queries) == len(sequential_fake.requests_to("/Groups"))


@pytest.mark.parametrize("paging", ["index", "cursor"])
def test_a_failing_user_page_stops_the_fetching_ahead(paging: str) -> None:
    # Group pages are slow: the first one fetched ahead is still out when the
    # second user page fails, and none follows it.
    with _fake(paging, page_cap=4) as fake:
        fake.fail(
            Fault(
                status=400,
                body=b"no",
                path="/Users",
                after=1,
                times=None,
            ),
            Fault(action="stall", seconds=0.3, path="/Groups", times=None),
        )
        with pytest.raises(ScimRequestError, match=r"/Users failed with status 400"):
            read_fake(fake, "pageSize=4", "groupPageSize=1", "concurrency=4")
        time.sleep(0.8)
        groups = fake.requests_to("/Groups")

    assert len(groups) == 1


def _at(start: int) -> Any:
    return lambda request: request.query.get("startIndex") == str(start)


def test_a_group_page_fetched_ahead_fails_where_the_listing_meets_it() -> None:
    errors = []
    for concurrency in ("1", "4"):
        with _fake("index") as fake:
            fake.fail(
                _slow_users(0.01),
                scim_error(400, "page 2 is gone", path="/Groups", when=_at(4)),
            )
            with pytest.raises(ScimRequestError) as caught:
                read_fake(
                    fake,
                    "pageSize=4",
                    "groupPageSize=3",
                    f"concurrency={concurrency}",
                    "membershipStrategy=inline",
                )
            errors.append(str(caught.value).replace(str(fake.port), "PORT"))
            if concurrency == "4":
                # The failed page was fetched ahead, before the last user page.
                order = fake.list_requests()
                failed = next(i for i, r in enumerate(order) if _at(4)(r))
                last_user = max(i for i, r in enumerate(order) if r.path == "/Users")
                assert failed < last_user
    assert errors[0] == errors[1]
    assert "/Groups failed with status 400" in errors[0]
    assert "page 2 is gone" in errors[0]


def _big_groups(count: int) -> list[Resource]:
    # About 6 kB per group: 40 members with long values.
    return [
        group(f"g{n}", [member(f"u{k}-{'x' * 120}", "User") for k in range(40)])
        for n in range(1, count + 1)
    ]


def test_fetching_ahead_stays_within_the_byte_budget() -> None:
    with FakeScim([user("u1")], _big_groups(10)) as fake:
        client = ScimClient(
            fake.base_url,
            username=None,
            password="t",
            settings=ClientSettings(concurrency=8, retry_backoff=0),
        )
        try:
            paging = Paging(mode="index", page_size=2)
            page = len(client.get_bytes("Groups", {"startIndex": 1, "count": 2})[1])
            fake.requests.clear()
            # Room for two and a half pages: the first, then one more.
            client.prefetch("Groups", paging, None, budget=page * 5 // 2)
            time.sleep(0.5)
            ahead = [r.query["startIndex"] for r in fake.requests_to("/Groups")]
            listed = list(client.iter_resources("Groups", paging))
        finally:
            client.close()
    assert ahead == ["1", "3"]
    assert [resource["id"] for resource in listed] == [f"g{n}" for n in range(1, 11)]
    starts = [r.query["startIndex"] for r in fake.requests_to("/Groups")]
    # Every window once, plus the request past the end that confirms it.
    assert sorted(starts, key=int) == ["1", "3", "5", "7", "9", "11"]


def test_fetching_ahead_needs_the_same_query() -> None:
    with FakeScim([user("u1")], _big_groups(3)) as fake:
        client = ScimClient(
            fake.base_url, username=None, password="t", settings=ClientSettings()
        )
        try:
            paging = Paging(mode="index", page_size=2)
            client.prefetch("Groups", paging, None, budget=1 << 20)
            time.sleep(0.3)
            excluded = {"excludedAttributes": "members"}
            listed = list(client.iter_resources("Groups", paging, excluded))
        finally:
            client.close()
    # The pages fetched with members were not handed to a listing without them.
    assert all("members" not in resource for resource in listed)
    asked = [r.query.get("excludedAttributes") for r in fake.requests_to("/Groups")]
    assert asked.count("members") == 3
    assert asked.count(None) >= 1
