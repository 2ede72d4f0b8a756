"""Hostile SCIM servers cannot exhaust the connector, nor learn its credentials.

Every run is the real ``elimity-connector run scim`` (in-process, see
`tests.test_faults.run_cli`) against `FakeScim` on loopback, with a 1 MiB response
cap, a 1 s request timeout and bounded waits: oversized bodies, a gzip bomb,
100,000 levels of JSON nesting, huge strings and arrays, endless pages, stalls and
trickles must end the run with one clear error line and exit 4, in bounded time
and memory, with nothing pushed. Redirects to another host never carry the
``Authorization`` header.
"""

from __future__ import annotations

import itertools
import json
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_insights import FakeInsights, summarize
from tests.support.fake_scim import (
    LIST_RESPONSE,
    FakeScim,
    Fault,
    RecordedRequest,
    default_service_provider_config,
    group,
    member,
    user,
)
from tests.test_faults import (
    INSIGHTS_TOKEN,
    SOURCE_ID,
    TOKEN,
    Run,
    assert_clean_failure,
    push_environ,
    reset,
    run_arguments,
    run_bounded,
    run_cli,
)

CAP = "maxResponseMb=1"
LIMIT = 1 << 20
TOO_LARGE = f"is larger than the limit of {LIMIT} bytes"
DEPTH = 100_000


@pytest.fixture(scope="module")
def insights() -> Iterator[FakeInsights]:
    with FakeInsights(source_id=SOURCE_ID, token=INSIGHTS_TOKEN) as fake:
        yield fake


@pytest.fixture
def push(insights: FakeInsights, tmp_path: Path) -> Any:
    """Run the connector against a fake, pushing to the module's fake Insights."""
    reset(insights)

    def run(
        fake: FakeScim, *sets: str, limit: float = 60, username: str | None = None
    ) -> Run:
        environ = push_environ(fake.base_url, insights, tmp_path / "state.json")
        if username is not None:
            environ["ELIMITY_SCIM_USERNAME"] = username
        arguments = run_arguments(*sets)
        result, elapsed = run_bounded(
            lambda: run_cli(environ, arguments), limit, fake.stop
        )
        assert result is not None, (
            f"the run hung: still going after {elapsed:.0f} s, when the test cut "
            "the server off"
        )
        return result

    return run


def _directory() -> FakeScim:
    users = [user("u1"), user("u2"), user("u3")]
    groups = [group("g1", [member("u1", "User"), member("u2", "User")])]
    return FakeScim(users, groups, bearer_token=TOKEN)


def _page(resources: list[Any], **fields: Any) -> dict[str, Any]:
    return {"schemas": [LIST_RESPONSE], **fields, "Resources": resources}


def _failure(run: Run, insights: FakeInsights, code: int = 4) -> str:
    assert run.code == code, run.stderr[-3000:]
    return assert_clean_failure(run, insights)


# -- Size ------------------------------------------------------------------------------


@cache
def gzip_bomb(size: int = 256 << 20) -> bytes:
    """A gzip stream of valid JSON that inflates to ``size`` bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    parts = [compressor.compress(b'{"Resources": [], "pad": "')]
    block = b"a" * (1 << 20)
    parts += [compressor.compress(block) for _ in range(size >> 20)]
    parts += [compressor.compress(b'"}'), compressor.flush()]
    return b"".join(parts)


def _huge_string() -> Fault:
    body = _page([user("u1", "x" * (2 * LIMIT))], totalResults=1)
    return Fault(status=200, body=body, path="/Users", times=None)


def _huge_array() -> Fault:
    # 700,000 entries: 1.4 MB of JSON, and as many skip warnings if accepted.
    body = '{"Resources": [' + ",".join(["0"] * 700_000) + "]}"
    return Fault(status=200, body=body, path="/Users", times=None)


def _gzip_bomb() -> Fault:
    headers = {"Content-Encoding": "gzip"}
    return Fault(status=200, body=gzip_bomb(), headers=headers, path="/Users")


def _huge_error() -> Fault:
    body = {"detail": "x" * (2 * LIMIT)}
    return Fault(status=500, body=body, path="/Users", times=None)


@pytest.mark.parametrize(
    "fault",
    [_huge_string, _huge_array, _gzip_bomb, _huge_error],
    ids=["huge-string", "huge-array", "gzip-bomb", "huge-error-body"],
)
def test_a_body_over_max_response_mb_fails(
    fault: Any, push: Any, insights: FakeInsights
) -> None:
    injected = fault()
    with _directory() as fake:
        fake.fail(injected)
        tracemalloc.start()
        try:
            run = push(fake, CAP, "retryAttempts=2")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    message = _failure(run, insights)
    assert f"the response of {fake.base_url}/Users {TOO_LARGE}" in message
    assert run.seconds < 20
    # Far less than the 256 MiB the bomb inflates to, or a second copy of a body.
    assert peak < 24 * LIMIT, f"peak {peak / LIMIT:.0f} MiB"


def test_a_body_just_under_max_response_mb_is_read(
    push: Any, insights: FakeInsights
) -> None:
    users = [user(f"u{n}", f"user{n}", title="t" * 900) for n in range(1000)]
    size = len(json.dumps(_page(users, totalResults=1000)))
    assert LIMIT - 60_000 < size < LIMIT
    with FakeScim(users, bearer_token=TOKEN) as fake:
        run = push(fake, CAP, "pageSize=1000")

    assert run.code == 0, run.stderr[-3000:]
    assert insights.snapshot_attempts == 1
    assert len(insights.summary().users) == 1000


# -- Shape -----------------------------------------------------------------------------

NESTED_ARRAY = "[" * DEPTH + "]" * DEPTH
NESTED_OBJECT = '{"a": ' * DEPTH + "1" + "}" * DEPTH
NESTED_IN_RESOURCE = (
    '{"Resources": [{"id": "u1", "userName": "x", "name": '
    + NESTED_OBJECT
    + "}], "
    + '"totalResults": 1}'
)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, NESTED_ARRAY),
        (200, NESTED_OBJECT),
        (200, NESTED_IN_RESOURCE),
        (500, NESTED_ARRAY),
        (400, NESTED_OBJECT),
    ],
    ids=["array", "object", "in-a-resource", "500-error-body", "400-error-body"],
)
def test_deeply_nested_json_is_a_clean_error(
    status: int, body: str, push: Any, insights: FakeInsights
) -> None:
    with _directory() as fake:
        fake.fail(Fault(status=status, body=body, path="/Users", times=None))
        run = push(fake, "retryAttempts=2")

    message = _failure(run, insights)
    assert f"{fake.base_url}/Users" in message
    assert len(message) < 600
    assert run.seconds < 10


# -- Endless pages ---------------------------------------------------------------------


def _inventor(endpoint: str) -> Any:
    """An ``on_request`` hook adding five new resources on every listing request."""
    numbers = itertools.count()

    def invent(fake: FakeScim, request: RecordedRequest) -> None:
        if request.path != f"/{endpoint}":
            return
        for _ in range(5):
            number = next(numbers)
            if endpoint == "Users":
                fake.users.append(user(f"new-{number}"))
            else:
                fake.groups.append(group(f"new-{number}", [member("u1", "User")]))

    return invent


def _cursor_only(fake: FakeScim) -> None:
    config = default_service_provider_config()
    config["pagination"] = {"cursor": True, "index": False}
    fake.service_provider_config = config
    fake.cursor_only = True


@pytest.mark.parametrize("endpoint", ["Users", "Groups"])
@pytest.mark.parametrize("paging", ["index-no-total", "index-growing-total", "cursor"])
@pytest.mark.parametrize("concurrency", [1, 4])
def test_endless_pages_of_new_ids_stop_at_max_resources(
    endpoint: str, paging: str, concurrency: int, push: Any, insights: FakeInsights
) -> None:
    with _directory() as fake:
        fake.on_request = _inventor(endpoint)
        if paging == "index-no-total":
            fake.total_results = "missing"
        elif paging == "cursor":
            _cursor_only(fake)
        # A bound for the test itself: after 500 requests, only dropped connections.
        fake.fail(Fault(action="drop", after=500, times=None))
        run = push(
            fake,
            "maxResources=100",
            "pageSize=5",
            f"concurrency={concurrency}",
            "retryAttempts=1",
        )

    message = _failure(run, insights)
    assert message == (
        f"{fake.base_url}/{endpoint} lists more than maxResources (100) resources; "
        "raise the setting if the directory is really that large"
    )
    assert len(fake.requests_to(f"/{endpoint}")) < 40


@pytest.mark.parametrize(
    ("entries", "total"),
    [
        ([{"userName": "no-id"}] * 3, None),
        ([0, "x", None], None),
        ([{"id": ""}, {"userName": "no-id"}], 10**6),  # concurrent windows
    ],
    ids=["without-id", "not-objects", "empty-ids-large-total"],
)
def test_endless_pages_of_unusable_entries_end(
    entries: list[object], total: int | None, push: Any, insights: FakeInsights
) -> None:
    # Every page brings three entries and nothing the connector can keep: a
    # server like this must not keep it paging forever.
    fields = {} if total is None else {"totalResults": total}
    with _directory() as fake:
        # A bound for the test itself: after 2,000 requests, only dropped connections.
        fake.fail(Fault(action="drop", after=2000, times=None))
        body = _page(entries, **fields)
        fake.fail(Fault(status=200, body=body, path="/Users", times=None))
        run = push(fake, "maxResources=100", "retryAttempts=1", limit=30)

    message = _failure(run, insights)
    requests = len(fake.requests_to("/Users"))
    assert requests < 200, f"{requests} requests, then: {message}"


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_huge_total_results_costs_no_memory(
    concurrency: int, push: Any, insights: FakeInsights
) -> None:
    # Every page of five users claims 10**15 more. (Were the windows up to the
    # total built as a list, 10**9 would take gigabytes; 10**15 fails at once.)
    users = [user(f"u{n}") for n in range(5)]
    with FakeScim(users, bearer_token=TOKEN, total_results_delta=10**15) as fake:
        run = push(fake, "pageSize=2", f"concurrency={concurrency}", limit=30)

    if run.code == 0:
        assert set(insights.summary().users) == {f"u{n}" for n in range(5)}
    else:
        _failure(run, insights)
    assert len(fake.requests_to("/Users")) < 100


# -- Time ------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["stall", "stall_body"])
def test_a_server_that_stalls_forever_fails_within_the_timeouts(
    action: str, push: Any, insights: FakeInsights
) -> None:
    with _directory() as fake:
        stall = Fault(
            action=action,  # type: ignore[arg-type]
            status=200,
            body=json.dumps(_page([user("u1")], totalResults=1)),
            seconds=120,
            path="/Users",
            times=None,
        )
        fake.fail(stall)
        run = push(fake, "requestTimeout=1", "retryAttempts=3")

    message = _failure(run, insights)
    assert "did not answer in time" in message
    assert len(fake.requests_to("/Users")) == 3
    assert run.seconds < 1 * 3 + 3  # requestTimeout × attempts, and some slack


def test_a_server_that_trickles_forever_fails_within_the_timeouts(
    push: Any, insights: FakeInsights
) -> None:
    # One byte every 0.3 s: each read gets something before the 1 s timeout, so
    # only a deadline for the whole response can stop it.
    with _directory() as fake:
        trickle = Fault(
            action="trickle",
            status=200,
            body=b'{"Resources": [',
            seconds=0.3,
            path="/Users",
            times=None,
        )
        fake.fail(trickle)
        started = time.monotonic()
        run = push(fake, "requestTimeout=1", "retryAttempts=2", limit=12)
        elapsed = time.monotonic() - started

    _failure(run, insights)
    assert elapsed < 1 * 2 + 8, f"took {elapsed:.0f} s"


@pytest.mark.parametrize("status", [503, 500])
def test_a_retried_answer_whose_body_trickles_does_not_hold_the_retry(
    status: int, push: Any, insights: FakeInsights
) -> None:
    # Before retrying, urllib3 reads the rest of the refused answer to reuse the
    # connection, with no deadline: a body that trickles held the run forever
    # (found in review). The connection is given up instead, and the retry works.
    with _directory() as fake:
        fake.fail(
            Fault(
                action="trickle",
                status=status,
                body=b'{"detail": "busy"',
                seconds=0.3,
                path="/Users",
            )
        )
        run = push(fake, "requestTimeout=2", limit=20)

    assert run.code == 0, run.stderr[-3000:]
    first, retried = fake.requests_to("/Users")[:2]
    assert retried.raw_query == first.raw_query
    (snapshot,) = insights.snapshots
    assert len(summarize(snapshot).users) == 3
    assert run.seconds < 10, f"took {run.seconds:.0f} s"


# -- Redirects -------------------------------------------------------------------------


def _other_server(where: str) -> FakeScim:
    other = FakeScim([user("u1"), user("u2")], [group("g1", [member("u1", "User")])])
    if where == "127.0.0.2":
        other.host = "127.0.0.2"
    return other


def _location(other: FakeScim, where: str) -> str:
    if where == "localhost":
        return other.base_url.replace("127.0.0.1", "localhost")
    return other.base_url  # 127.0.0.2, or 127.0.0.1 on another port


@pytest.mark.parametrize("where", ["localhost", "127.0.0.2", "other-port"])
@pytest.mark.parametrize("auth", ["bearer", "basic"])
def test_a_redirect_to_another_host_drops_the_authorization_header(
    where: str, auth: str, push: Any, insights: FakeInsights
) -> None:
    credentials: dict[str, Any] = (
        {"bearer_token": TOKEN} if auth == "bearer" else {"basic": ("alice", TOKEN)}
    )
    with _other_server(where) as other, FakeScim(**credentials) as first:
        first.fail(
            Fault(
                action="redirect",
                status=302,
                location=_location(other, where),
                path="/Users",
                times=None,
            )
        )
        run = push(first, username="alice" if auth == "basic" else None)

    followed = other.requests_to("/Users")
    assert followed, run.stderr[-3000:]
    assert [r.headers.get("authorization") for r in followed] == [None] * len(followed)
    assert run.code == 0, run.stderr[-3000:]
    assert set(insights.summary().users) == {"u1", "u2"}


@pytest.mark.parametrize("auth", ["bearer", "basic"])
def test_a_redirect_to_the_same_host_keeps_the_authorization_header(
    auth: str, push: Any, insights: FakeInsights
) -> None:
    credentials: dict[str, Any] = (
        {"bearer_token": TOKEN} if auth == "bearer" else {"basic": ("alice", TOKEN)}
    )
    with FakeScim([user("u1")], **credentials) as fake:
        fake.fail(Fault(action="redirect", status=302, path="/Users", times=1))
        run = push(fake, username="alice" if auth == "basic" else None)

    assert run.code == 0, run.stderr[-3000:]
    first, followed = fake.requests_to("/Users")[:2]
    assert first.headers.get("authorization")
    assert followed.headers.get("authorization") == first.headers["authorization"]


def test_a_redirect_loop_ends(push: Any, insights: FakeInsights) -> None:
    with _directory() as fake:
        fake.fail(Fault(action="redirect", status=302, path="/Users", times=None))
        run = push(fake)

    message = _failure(run, insights)
    assert "too many redirects" in message
    assert len(fake.requests_to("/Users")) < 100
