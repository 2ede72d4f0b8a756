"""Group pages are fetched alongside the last user pages, and nothing else changes.

Users are recorded before groups (memberships point at user numbers), but once
the user listing has handed its last request to the pool, the first group pages
are requested on the connections it leaves idle and kept as bytes until the group
listing takes them (`elimity_scim.prefetch`). These tests run against `FakeScim`
on 127.0.0.1: what is read equals a concurrency 1 reading, every group request is
sent once, a failure stops the fetching ahead and ends the process at once.
"""

from __future__ import annotations

import gc
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from elimity_scim.client import ClientSettings, Paging, ScimClient
from elimity_scim.concurrency import DaemonPool
from elimity_scim.connector.config import env_name
from elimity_scim.errors import ScimRequestError
from elimity_scim.prefetch import Prefetch, query_key
from tests.support.fake_scim import (
    FakeScim,
    Fault,
    Reading,
    RecordedRequest,
    Resource,
    group,
    member,
    read_fake,
    scim_error,
    user,
)
from tests.test_end_to_end import run

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


def _at(start: int) -> Callable[[RecordedRequest], bool]:
    return lambda request: request.query.get("startIndex") == str(start)


# 40 users in pages of 4: the first page, windows at 5, 9, ..., 37, and the request
# past the end at 41 that confirms it.
_SETTINGS = ("pageSize=4", "groupPageSize=3")
LAST_WINDOW = 37
PAST_END = USERS + 1


@contextmanager
def _client(fake: FakeScim, **settings: Any) -> Iterator[ScimClient]:
    client = ScimClient(
        fake.base_url, username=None, password="t", settings=ClientSettings(**settings)
    )
    try:
        yield client
    finally:
        client.close()


def _order(fake: FakeScim) -> list[str]:
    return [request.path for request in fake.list_requests()]


def _arrivals(fake: FakeScim) -> list[tuple[float, RecordedRequest]]:
    arrivals: list[tuple[float, RecordedRequest]] = []
    fake.on_request = lambda _, request: arrivals.append((time.monotonic(), request))
    return arrivals


def test_group_pages_are_fetched_while_the_last_user_page_is_out() -> None:
    settings = ("pageSize=4", "groupPageSize=3")
    with _fake("index") as fake:
        arrivals = _arrivals(fake)
        # The request past the end of the users takes a second to answer.
        fake.fail(Fault(action="stall", seconds=1.0, path="/Users", when=_at(PAST_END)))
        ahead = read_fake(fake, *settings, "concurrency=4")
    with _fake("index") as sequential_fake:
        sequential = read_fake(sequential_fake, *settings, "concurrency=1")

    asked = next(t for t, r in arrivals if r.path == "/Users" and _at(PAST_END)(r))
    first_group = next(t for t, r in arrivals if r.path == "/Groups")
    assert first_group - asked < 0.8  # while that user request was still out
    # Concurrency 1 fetches nothing ahead: every group request after the users.
    order = _order(sequential_fake)
    assert order.index("/Groups") > max(
        i for i, path in enumerate(order) if path == "/Users"
    )
    # What is read does not depend on it.
    assert ahead == sequential
    assert ahead.users == [f"u{n}" for n in range(1, USERS + 1)]
    assert ahead.groups == [f"g{n}" for n in range(1, GROUPS + 1)]
    assert ahead.relationships == _expected()
    # A page fetched ahead is taken by the listing, not asked for again.
    queries = [query_key(r.query) for r in fake.requests_to("/Groups")]
    assert len(queries) == len(set(queries))
    assert len(queries) == len(sequential_fake.requests_to("/Groups"))


def test_cursor_paged_groups_are_not_fetched_ahead() -> None:
    # A cursor handed out early could expire before the group listing follows it.
    with _fake("cursor") as fake:
        reading = read_fake(fake, "pageSize=4", "groupPageSize=3", "concurrency=4")
    order = _order(fake)
    assert order.index("/Groups") > max(
        i for i, path in enumerate(order) if path == "/Users"
    )
    assert reading.relationships == _expected()


def _failing_end() -> tuple[Fault, Fault]:
    # The last user window takes half a second, by which time the group listing's
    # first request is out; then the request past the end fails (with
    # retryAttempts=1, at once).
    return (
        Fault(action="stall", seconds=0.5, path="/Users", when=_at(LAST_WINDOW)),
        scim_error(500, "gone", path="/Users", when=_at(PAST_END)),
    )


_FAILED = r"/Users failed with status 500"


def test_a_failing_user_page_stops_the_fetching_ahead() -> None:
    with _fake("index") as fake:
        # Group pages are slow: the first one is still out when the user listing
        # fails, and none follows it.
        fake.fail(
            *_failing_end(),
            Fault(action="stall", seconds=1.5, path="/Groups", times=None),
        )
        with pytest.raises(ScimRequestError, match=_FAILED):
            read_fake(fake, *_SETTINGS, "concurrency=4", "retryAttempts=1")
        time.sleep(2.0)
        groups = fake.requests_to("/Groups")

    assert [r.query["startIndex"] for r in groups] == ["1"]


def test_the_process_ends_at_once_when_reading_fails_with_requests_out(
    tmp_path: Path,
) -> None:
    # A group page fetched ahead hangs for 30 s (within the 40 s timeout): the
    # failed run must not wait for it before it exits.
    output = tmp_path / "snapshot.json"
    with _fake("index") as fake:
        fake.fail(
            *_failing_end(),
            Fault(action="stall", seconds=30, path="/Groups", times=None),
        )
        started = time.monotonic()
        result = run(
            "run",
            "scim",
            "--output",
            str(output),
            env={
                "ELIMITY_SCIM_BASE_URL": fake.base_url,
                "ELIMITY_SCIM_PASSWORD": "t",
                **{
                    env_name("scim", key): value
                    for key, value in {
                        "pageSize": "4",
                        "groupPageSize": "3",
                        "concurrency": "4",
                        "requestTimeout": "40",
                        "retryAttempts": "1",
                        "requestAttributes": "false",
                    }.items()
                },
            },
        )
        elapsed = time.monotonic() - started
        groups = len(fake.requests_to("/Groups"))

    assert result.returncode == 4, result.stderr
    assert re.search(_FAILED, result.stderr)
    assert groups == 1
    assert elapsed < 10, f"exited after {elapsed:.1f} s"
    assert not output.exists()


def test_a_group_page_fetched_ahead_fails_where_the_listing_meets_it() -> None:
    errors = []
    for concurrency in ("1", "4"):
        with _fake("index") as fake:
            fake.fail(
                Fault(action="stall", seconds=1.0, path="/Users", when=_at(PAST_END)),
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
                # The failed page was fetched ahead (the listing, started after
                # the stalled user request, would never have sent it that soon).
                asked = {r.path: r for r in fake.list_requests() if _at(4)(r)}
                assert "/Groups" in asked
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
    paging = Paging(mode="index", page_size=2)
    with (
        FakeScim([user("u1")], _big_groups(10)) as fake,
        _client(fake, concurrency=8) as client,
    ):
        fetched = client.get_bytes("Groups", {"startIndex": 1, "count": 2})
        assert fetched is not None
        fake.requests.clear()
        # Room for two and a half pages: the first, then one more.
        client.prefetch("Groups", paging, None, budget=len(fetched[1]) * 5 // 2)
        time.sleep(0.5)
        ahead = [r.query["startIndex"] for r in fake.requests_to("/Groups")]
        listed = list(client.iter_resources("Groups", paging))
    assert ahead == ["1", "3"]
    assert [resource["id"] for resource in listed] == [f"g{n}" for n in range(1, 11)]
    starts = [r.query["startIndex"] for r in fake.requests_to("/Groups")]
    # Every window once, plus the request past the end that confirms it.
    assert sorted(starts, key=int) == ["1", "3", "5", "7", "9", "11"]


def test_fetching_ahead_needs_the_same_query() -> None:
    paging = Paging(mode="index", page_size=2)
    with FakeScim([user("u1")], _big_groups(3)) as fake, _client(fake) as client:
        client.prefetch("Groups", paging, None, budget=1 << 20)
        time.sleep(0.3)
        excluded = {"excludedAttributes": "members"}
        listed = list(client.iter_resources("Groups", paging, excluded))
    # The pages fetched with members were not handed to a listing without them.
    assert all("members" not in resource for resource in listed)
    asked = [r.query.get("excludedAttributes") for r in fake.requests_to("/Groups")]
    assert asked.count("members") == 3
    assert asked.count(None) >= 1


@pytest.mark.parametrize(
    ("fault", "most"),
    [
        # urllib3 retries at once, then after 0.6 to 0.9 s, then 1.2 to 1.5 s
        # later: four attempts within 3.5 s while the client is open; closed
        # after the first, at most the one already decided on follows.
        (Fault(status=500, path="/Groups", times=None), 2),
        # Closed while waiting out a Retry-After: no attempt follows.
        (Fault(status=503, headers={"Retry-After": "2"}, path="/Groups"), 1),
    ],
    ids=["backoff", "retry-after"],
)
def test_requests_out_make_no_further_attempt_once_the_client_is_closed(
    fault: Fault, most: int
) -> None:
    # A group page fetched ahead is refused again and again; the run has failed
    # meanwhile and closed the client.
    with _fake("index") as fake:
        fake.fail(fault)
        with _client(fake, retry_attempts=20, retry_backoff=0.3) as client:
            client.prefetch("Groups", Paging("index", 3), None, budget=1 << 20)
            deadline = time.monotonic() + 5
            while not fake.requests_to("/Groups") and time.monotonic() < deadline:
                time.sleep(0.01)
        time.sleep(3.5)
        attempts = len(fake.requests_to("/Groups"))
    assert 1 <= attempts <= most


def test_a_user_listing_that_goes_on_past_its_total_drops_the_pages_ahead() -> None:
    # The users' totalResults says 8 of 60: the concurrent windows end early and
    # the user listing goes on one page after another. Group pages fetched when
    # the windows ran out would be combined with pages read after the directory
    # changed (g1 deleted, g99 created, while users are still read), giving a
    # group list of neither state; they are dropped instead.
    def reading(concurrency: str) -> Reading:
        users = [user(f"u{n}") for n in range(1, 61)]
        groups = [group(f"g{n}", [member(f"u{n}", "User")]) for n in range(1, 61)]
        changed = threading.Event()

        def on_request(fake: FakeScim, request: RecordedRequest) -> None:
            fake.total_results_delta = 8 - 60 if request.path == "/Users" else 0
            late = int(request.query.get("startIndex", "0")) >= 41
            if request.path == "/Users" and late and not changed.is_set():
                changed.set()
                fake.groups = [g for g in fake.groups if g["id"] != "g1"]
                fake.groups.append(group("g99", [member("u1", "User")]))

        with FakeScim(users, groups, on_request=on_request) as fake:
            return read_fake(fake, *_SETTINGS, f"concurrency={concurrency}")

    after = [f"g{n}" for n in range(2, 61)] + ["g99"]
    assert reading("1").groups == after
    assert reading("4").groups == after


def test_a_server_overstating_total_results_gets_few_requests_ahead() -> None:
    # totalResults a million too high: the windows fetched ahead stop at the
    # first short or empty page, and never exceed concurrency + 2.
    with (
        _fake("index", total_results_delta=1_000_000) as fake,
        _client(fake, concurrency=8) as client,
    ):
        client.prefetch("Groups", Paging("index", 3), None, budget=1 << 20)
        time.sleep(0.5)
        starts = [int(r.query["startIndex"]) for r in fake.requests_to("/Groups")]
    assert len(starts) <= 10
    assert starts[:1] == [1]
    # The first empty page is at 13; at most four more were out by then.
    assert max(starts) <= 13 + 4 * 3


def test_an_answer_already_in_when_its_request_is_handed_over() -> None:
    # A pool may finish a request before submit returns; its callback then runs
    # at once, in the same thread, and must not wait for a lock held there.
    pages = {
        start: orjson.dumps(
            {
                "totalResults": 7,
                "Resources": [{"id": f"g{n}"} for n in range(start, min(start + 3, 8))],
            }
        )
        for start in (1, 4, 7, 8)
    }

    def fetch(query: Any) -> tuple[requests.Response, bytes]:
        response = requests.Response()
        response.status_code = 200
        return response, pages[int(query["startIndex"])]

    def submit(function: Callable[[], Any]) -> Future[Any]:
        done: Future[Any] = Future()
        done.set_result(function())
        return done

    prefetch = Prefetch(
        url="http://127.0.0.1:9/Groups",
        page_size=3,
        params=None,
        budget=1 << 20,
        parallel=2,
        pages=10,
        fetch=fetch,
        submit=submit,
        read_page=lambda body: (len(orjson.loads(body)["Resources"]), 7, False),
    )
    worker = threading.Thread(target=prefetch.start, daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive(), "deadlocked"
    # The first page; then 4 and 7 (two out at a time), and 8 once 4 is in; the
    # short page at 7 ends it.
    assert prefetch.sent == 4
    taken = prefetch.take("http://127.0.0.1:9/Groups", {"startIndex": 4, "count": 3})
    assert taken is not None
    assert taken[1] == pages[4]


def test_an_idle_worker_holds_no_result() -> None:
    # A worker waiting for its next call must not keep the last page it fetched.
    class Page:
        pass

    pool = DaemonPool(1, "test")
    try:
        done = pool.submit(Page)
        page = weakref.ref(done.result())
        del done
        deadline = time.monotonic() + 5
        while page() is not None and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.01)
        assert page() is None
    finally:
        pool.shutdown()
