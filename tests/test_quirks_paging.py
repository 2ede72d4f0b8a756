"""Paging quirks (SCIM-QUIRKS 1 to 6) and the listing stop rule, over real HTTP."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from elimity_scim.errors import ScimPagingError, ScimRequestError
from tests.support.fake_scim import (
    FakeScim,
    RecordedRequest,
    Resource,
    group,
    member,
    read_fake,
    scim_error,
    user,
)

URL = r"http://127\.0\.0\.1:\d+/scim/v2"


def _users(count: int) -> list[Resource]:
    return [user(f"u{n}") for n in range(1, count + 1)]


def _ids(count: int) -> list[str]:
    return [f"u{n}" for n in range(1, count + 1)]


def _starts(fake: FakeScim, path: str = "/Users") -> list[int]:
    # Sorted: once totalResults is known, pages may be read concurrently.
    return sorted(int(r.query["startIndex"]) for r in fake.requests_to(path))


def _at(start: int) -> Callable[[RecordedRequest], bool]:
    return lambda request: request.query.get("startIndex") == str(start)


def _assert_never_cursor_with_start_index(fake: FakeScim) -> None:
    mixed = [
        r for r in fake.requests if "cursor" in r.query and "startIndex" in r.query
    ]
    assert mixed == []


# -- 1. Empty result without Resources ------------------------------------------


@pytest.mark.parametrize("empty", ["omit", "null"])
def test_empty_listings_without_resources_are_empty(empty: str) -> None:
    with FakeScim([], [], empty_resources=empty) as fake:
        reading = read_fake(fake)

    assert (reading.users, reading.groups, reading.relationships) == ([], [], [])
    assert _starts(fake) == [1]
    assert _starts(fake, "/Groups") == [1]


@pytest.mark.parametrize("empty", ["omit", "null"])
def test_empty_group_listing_next_to_users(empty: str) -> None:
    with FakeScim(_users(2), [], empty_resources=empty) as fake:
        reading = read_fake(fake)

    assert reading.users == ["u1", "u2"]
    assert (reading.groups, reading.relationships) == ([], [])


# -- 2. Pages capped silently ---------------------------------------------------


def test_capped_pages_advance_by_what_arrived() -> None:
    with FakeScim(_users(7), page_cap=2, items_per_page="requested") as fake:
        reading = read_fake(fake)

    assert reading.users == _ids(7)
    assert _starts(fake) == [1, 3, 5, 7, 8]
    assert {r.query["count"] for r in fake.requests_to("/Users")} == {"100"}


def test_service_provider_config_max_results_caps_the_page_size() -> None:
    with FakeScim(_users(5)) as fake:
        assert fake.service_provider_config is not None
        fake.service_provider_config["filter"]["maxResults"] = 2
        reading = read_fake(fake)

    assert reading.users == _ids(5)
    assert {r.query["count"] for r in fake.requests_to("/Users")} == {"2"}
    assert _starts(fake) == [1, 3, 5, 6]


# -- 3. totalResults lies --------------------------------------------------------


@pytest.mark.parametrize(
    ("knobs", "starts"),
    [
        ({"total_results": "page"}, [1, 3, 5, 6]),
        ({"total_results": "missing"}, [1, 3, 5, 6]),
        # The confirming request at totalResults + 1 (4) goes out with the pages
        # and is wasted when the total is too small; reading goes on from 5.
        ({"total_results_delta": -2}, [1, 3, 4, 5, 6]),
        ({"numbers_as_strings": True}, [1, 3, 5, 6]),
    ],
    ids=["page-length", "missing", "too-small", "as-string"],
)
def test_lying_total_results_still_read_everything(
    knobs: dict[str, Any], starts: list[int]
) -> None:
    with FakeScim(_users(5), page_cap=2, **knobs) as fake:
        reading = read_fake(fake)

    assert reading.users == _ids(5)
    assert _starts(fake) == starts
    assert not [r for r in fake.requests_to("/Users") if "attributes" in r.query]


@pytest.mark.parametrize(
    ("knobs", "reported"),
    [({"total_results": "requested"}, 100), ({"total_results_delta": 2}, 7)],
    ids=["requested-count", "too-large"],
)
def test_total_results_above_the_listing_is_confirmed_by_a_second_reading(
    knobs: dict[str, Any], reported: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="elimity_scim")
    with FakeScim(_users(5), page_cap=2, **knobs) as fake:
        reading = read_fake(fake)

    assert reading.users == _ids(5)
    second = [r for r in fake.requests_to("/Users") if "attributes" in r.query]
    assert second[0].query == {"attributes": "id", "startIndex": "1", "count": "100"}
    assert {r.query["attributes"] for r in second} == {"id"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"Users reports totalResults {reported} but lists 5 resources" in "\n".join(
        warnings
    )


def test_a_second_reading_with_other_ids_is_an_unstable_listing() -> None:
    def churn(fake: FakeScim, request: RecordedRequest) -> None:
        if request.path == "/Users" and request.query.get("attributes") == "id":
            fake.users = [*_users(4), user("u9")]

    with FakeScim(_users(5), page_cap=2, total_results_delta=2) as fake:
        fake.on_request = churn
        with pytest.raises(
            ScimPagingError,
            match=(
                rf"^the listing of {URL}/Users is unstable: two readings gave 5 and 5 "
                r"resources with different ids \(the server reports 7\)$"
            ),
        ):
            read_fake(fake)


# -- 4. startIndex ignored --------------------------------------------------------


def test_ignored_start_index_is_reported_as_broken_paging() -> None:
    fake = FakeScim(_users(5), page_cap=2, ignore_start_index=True)
    with (
        fake,
        pytest.raises(
            ScimPagingError,
            match=(
                rf"^paging is broken at {URL}/Users: the page at startIndex 3 repeats "
                r"2 resources already read$"
            ),
        ),
    ):
        read_fake(fake)

    # Pages after the first go out together, the confirming request (6) too.
    assert {1, 3} <= set(_starts(fake)) <= {1, 3, 5, 6}


def test_start_index_echoed_as_zero_is_harmless() -> None:
    with FakeScim(_users(5), page_cap=2, start_index_echo="zero") as fake:
        reading = read_fake(fake)

    assert reading.users == _ids(5)
    assert _starts(fake) == [1, 3, 5, 6]


@pytest.mark.parametrize("case", ["lower", "upper"])
def test_list_response_keys_in_other_letter_case(case: str) -> None:
    groups = [group("g1", [member("u1", "User")])]
    with FakeScim(_users(3), groups, page_cap=2, key_case=case) as fake:
        reading = read_fake(fake)

    assert reading.users == _ids(3)
    assert reading.groups == ["g1"]
    assert reading.relationships == [("u1", "g1", "direct")]
    assert _starts(fake) == [1, 3, 4]


# -- 5. Paging only with explicit parameters -----------------------------------


def test_start_index_and_count_are_always_sent() -> None:
    groups = [group("g1", [member("u1", "User")]), group("g2", [])]
    with FakeScim(
        _users(25), groups, require_paging_params=True, default_count=10
    ) as fake:
        reading = read_fake(fake, "pageSize=10")

    assert reading.users == _ids(25)
    assert reading.groups == ["g1", "g2"]
    assert reading.relationships == [("u1", "g1", "direct")]
    listed = fake.list_requests()
    assert listed
    assert [r for r in listed if not {"startIndex", "count"} <= set(r.query)] == []
    assert _starts(fake) == [1, 11, 21, 26]


# -- 6. Cursor-only servers ------------------------------------------------------


def test_cursor_only_server_with_short_pages() -> None:
    groups = [group("g1", [member("u1", "User"), member("u4", "User")])]
    with FakeScim(
        _users(5),
        groups,
        cursor_only=True,
        page_cap=2,
        total_results="missing",
    ) as fake:
        assert fake.service_provider_config is not None
        fake.service_provider_config["pagination"] = {
            "cursor": True,
            "index": False,
            "maxPageSize": 50,
        }
        reading = read_fake(fake)

    assert reading.users == _ids(5)
    assert reading.relationships == [("u1", "g1", "direct"), ("u4", "g1", "direct")]
    users = fake.requests_to("/Users")
    assert [r.query["cursor"] for r in users] == ["", "c+0/2==", "c+1/4=="]
    assert {r.query["count"] for r in users} == {"50"}
    assert "cursor=c%2B0%2F2%3D%3D" in users[1].raw_query
    assert [r for r in fake.list_requests() if "startIndex" in r.query] == []


@pytest.mark.parametrize(
    ("pagination", "mode"),
    [
        ({"cursor": True, "index": False}, "cursor"),
        (
            {"cursor": True, "index": True, "defaultPaginationMethod": "cursor"},
            "cursor",
        ),
        ({"cursor": True, "index": True, "defaultPaginationMethod": "index"}, "index"),
        ({"cursor": "true", "index": "false"}, "cursor"),
        ({"cursor": False, "index": True}, "index"),
    ],
    ids=["cursor-only", "default-cursor", "default-index", "strings", "index-only"],
)
def test_paging_mode_follows_the_service_provider_config(
    pagination: dict[str, object], mode: str
) -> None:
    with FakeScim(_users(5), page_cap=2, spc_content_type="application/json") as fake:
        assert fake.service_provider_config is not None
        fake.service_provider_config["pagination"] = pagination
        reading = read_fake(fake)

    assert reading.users == _ids(5)
    users = fake.requests_to("/Users")
    if mode == "cursor":
        assert [r.query.get("cursor") for r in users] == ["", "c+0/2==", "c+1/4=="]
    else:
        assert _starts(fake) == [1, 3, 5, 6]
        assert [r for r in users if "cursor" in r.query] == []
    _assert_never_cursor_with_start_index(fake)


def test_max_page_size_of_the_pagination_block_caps_count() -> None:
    with FakeScim(_users(5)) as fake:
        assert fake.service_provider_config is not None
        fake.service_provider_config["pagination"] = {
            "cursor": True,
            "index": True,
            "maxPageSize": 3,
        }
        reading = read_fake(fake)

    assert reading.users == _ids(5)
    assert {r.query["count"] for r in fake.list_requests()} == {"3"}
    assert _starts(fake) == [1, 4, 6]


def test_unasked_next_cursor_switches_to_cursor_paging() -> None:
    with FakeScim(_users(5), page_cap=2, next_cursor_unasked=True) as fake:
        reading = read_fake(fake)

    assert reading.users == _ids(5)
    users = fake.requests_to("/Users")
    assert [(r.query.get("startIndex"), r.query.get("cursor")) for r in users] == [
        ("1", None),
        (None, "c+0/2=="),
        (None, "c+1/4=="),
    ]
    _assert_never_cursor_with_start_index(fake)


@pytest.mark.parametrize("content_type", [None, "application/json"])
def test_missing_or_plain_json_service_provider_config(
    content_type: str | None,
) -> None:
    with FakeScim(_users(3), page_cap=2) as fake:
        if content_type is None:
            fake.service_provider_config = None
        fake.spc_content_type = content_type
        reading = read_fake(fake)

    assert reading.users == _ids(3)
    assert len(fake.requests_to("/ServiceProviderConfig")) == 1
    assert _starts(fake) == [1, 3, 4]


# -- The index stop rule --------------------------------------------------------


def test_an_empty_page_ends_the_listing() -> None:
    with FakeScim(_users(5), page_cap=2, total_results="missing") as fake:
        reading = read_fake(fake)

    assert reading.users == _ids(5)
    assert _starts(fake) == [1, 3, 5, 6]


@pytest.mark.parametrize("status", [400, 404])
def test_an_error_on_the_confirming_request_ends_the_listing(status: int) -> None:
    with FakeScim(_users(4), page_cap=2, beyond_end_status=status) as fake:
        reading = read_fake(fake)

    assert reading.users == _ids(4)
    assert _starts(fake) == [1, 3, 5]


class _ConfirmAnsweredFirst(FakeScim):
    """Answers the request past the end (startIndex 9) before the last page (8),
    and a user is added just before the last one in between, as in the fault run
    (RFC 7644 promises no consistent listing across requests)."""

    def __init__(self, *args: Any, **knobs: Any) -> None:
        super().__init__(*args, **knobs)
        self.confirmed = threading.Event()

    def _answer(self, request: RecordedRequest) -> Any:
        if request.path == "/Users" and _at(8)(request):
            self.confirmed.wait(5)
            with self._lock:
                self.users.insert(7, user("u-new"))
        answer = super()._answer(request)
        if request.path == "/Users" and _at(9)(request):
            self.confirmed.set()
        return answer


def test_a_user_added_while_the_end_is_confirmed_is_not_lost() -> None:
    # The request that confirms the end goes out with the last pages; answered
    # before u8 moved past it, it saw nothing there. The later page's larger
    # totalResults sends the reader on, to u8 (the fault run found u8 missing,
    # 3 to 8 times in 30 replays, before the fix).
    with _ConfirmAnsweredFirst(_users(8)) as fake:
        reading = read_fake(fake, "pageSize=1", "concurrency=4")

    assert fake.confirmed.is_set()
    assert sorted(reading.users) == sorted([*_ids(8), "u-new"])
    assert _starts(fake).count(9) == 2  # answered empty, then read again


def test_an_error_before_total_results_is_reached_fails() -> None:
    with FakeScim(_users(5), page_cap=2) as fake:
        fake.fail(scim_error(404, "Page not found", path="/Users", when=_at(3)))
        with pytest.raises(
            ScimRequestError,
            match=rf"^SCIM request to {URL}/Users failed with status 404: Page not fou",
        ):
            read_fake(fake)

    # Pages after the first go out together, the confirming request (6) too.
    assert {1, 3} <= set(_starts(fake)) <= {1, 3, 5, 6}


def test_a_later_page_of_old_ids_is_broken_paging() -> None:
    def rewind(fake: FakeScim, request: RecordedRequest) -> None:
        if request.query.get("startIndex") == "5":
            fake.users = [user("u1"), user("u2"), user("u3"), user("u4"), user("u3")]

    with FakeScim(_users(6), page_cap=2) as fake:
        fake.on_request = rewind
        with pytest.raises(
            ScimPagingError,
            match=rf"^paging is broken at {URL}/Users: the page at startIndex 5 ",
        ):
            read_fake(fake)
