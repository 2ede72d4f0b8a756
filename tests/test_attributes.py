"""Users listed with ``attributes=`` (RFC 7644 §3.4.2.5), after a two-request probe."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from elimity_scim.errors import ScimAuthError, ScimRequestError
from elimity_scim.source import USER_ATTRIBUTES, ScimSource
from tests.conftest import BEARER_TOKEN, MakeScim2Server
from tests.support.directory import example_directory
from tests.support.fake_scim import (
    ERROR_SCHEMA,
    FakeScim,
    Fault,
    RecordedRequest,
    Resource,
    group,
    member,
    read_fake,
    read_options,
    scim_error,
    user,
)

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
MAPPED = [
    "userName",
    "displayName",
    "name",
    "title",
    "userType",
    "externalId",
    "preferredLanguage",
    "locale",
    "timezone",
    "active",
    "emails",
    "groups",
    "meta",
    f"{ENTERPRISE}:employeeNumber",
    f"{ENTERPRISE}:costCenter",
    f"{ENTERPRISE}:organization",
    f"{ENTERPRISE}:division",
    f"{ENTERPRISE}:department",
    f"{ENTERPRISE}:manager",
]
CURSOR_ONLY = {
    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
    "filter": {"supported": True, "maxResults": 1000},
    "pagination": {"cursor": True, "index": False},
}
CONNECTOR = str(Path(sys.executable).with_name("elimity-connector"))
# read_fake leaves the probe off unless told (tests/support/fake_scim.py).
ON, OFF = "requestAttributes=true", "requestAttributes=false"


def _person(n: int) -> Resource:
    return user(
        f"u{n}",
        displayName=f"Person {n}",
        name={"givenName": f"Given{n}", "familyName": f"Family{n}"},
        title="Engineer",
        userType="Employee",
        externalId=f"ext-{n}",
        preferredLanguage="en-GB",
        locale="en-GB",
        timezone="Europe/Brussels",
        active=n % 2 == 0,
        emails=[{"value": f"p{n}@example.test", "type": "work", "primary": True}],
        meta={"resourceType": "User", "created": "2024-01-02T03:04:05Z"},
        nickName=f"nick{n}",
        phoneNumbers=[{"value": f"+32 2 000 00 {n:02}", "type": "work"}],
        **{
            ENTERPRISE: {
                "employeeNumber": str(1000 + n),
                "costCenter": "CC-1",
                "organization": "Example",
                "division": "R&D",
                "department": "Platform",
                "manager": {"value": "u1", "displayName": "Person 1"},
            }
        },
    )


USERS = [_person(n) for n in range(1, 8)]
GROUPS = [
    group("g1", [member("u1"), member("u2"), member("g2", "Group")]),
    group("g2", [member("u3"), member("u4")]),
]


def _attributes_requests(fake: FakeScim) -> list[RecordedRequest]:
    return [r for r in fake.requests_to("/Users") if "attributes" in r.query]


def _probe_requests(fake: FakeScim) -> list[RecordedRequest]:
    # The probe reads 50 users (the default page size is 100).
    return [r for r in fake.requests_to("/Users") if r.query.get("count") == "50"]


def _listing_requests(fake: FakeScim) -> list[RecordedRequest]:
    return [r for r in fake.requests_to("/Users") if r.query.get("count") != "50"]


def _refuses(status: int) -> Fault:
    return scim_error(
        status,
        "attributes is not supported",
        "invalidValue",
        path="/Users",
        when=lambda request: "attributes" in request.query,
        times=None,
    )


def _check_lines(fake: FakeScim, *overrides: str) -> list[str]:
    return list(ScimSource().check(read_options(fake.base_url, ON, *overrides)))


def _attribute_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("user attributes:")]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_constant_names_every_user_attribute_the_mapping_reads() -> None:
    assert USER_ATTRIBUTES.split(",") == MAPPED


@pytest.mark.parametrize("mode", ["index", "cursor"])
def test_lists_users_with_exactly_the_mapped_attributes(mode: str) -> None:
    knobs: dict[str, Any] = {"user_groups": True, "page_cap": 3}
    if mode == "cursor":
        knobs["service_provider_config"] = CURSOR_ONLY
    with FakeScim(USERS, GROUPS, **knobs) as narrowed:
        reading = read_fake(narrowed, ON)
    with FakeScim(USERS, GROUPS, **knobs) as whole:
        reference = read_fake(whole, OFF)

    assert reading == reference
    assert reading.users == [f"u{n}" for n in range(1, 8)]
    assert reading.attributes["u3"]["givenName"] == "Given3"
    assert reading.attributes["u3"]["department"] == "Platform"
    assert ("u1", "g1", "direct") in reading.relationships
    assert ("u3", "g1", "indirect") in reading.relationships

    first_page = {"cursor": ""} if mode == "cursor" else {"startIndex": "1"}
    probes = _probe_requests(narrowed)
    assert [r.query for r in probes] == [
        {**first_page, "count": "50"},
        {**first_page, "count": "50", "attributes": USER_ATTRIBUTES},
    ]
    listing = _listing_requests(narrowed)
    assert len(listing) >= 3  # 7 users at 3 a page
    assert all(r.query["attributes"].split(",") == MAPPED for r in listing)
    assert all(r.query["count"] == "100" for r in listing)
    # Off: no probe, and nothing asks for attributes.
    assert _probe_requests(whole) == []
    assert _attributes_requests(whole) == []


def test_group_listing_is_untouched() -> None:
    with FakeScim(USERS, GROUPS) as fake:
        read_fake(fake, ON)

    assert [r for r in fake.requests_to("/Groups") if "attributes" in r.query] == []


@pytest.mark.parametrize("status", [400, 403, 404, 501, 500])
def test_server_refusing_attributes_is_read_with_whole_users(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="elimity_scim")
    with FakeScim(USERS, GROUPS) as fake:
        fake.fail(_refuses(status))
        reading = read_fake(fake, ON)
    with FakeScim(USERS, GROUPS) as whole:
        reference = read_fake(whole, OFF)

    assert reading == reference
    assert reading.attributes["u5"]["givenName"] == "Given5"
    # Only the probe asked (500 is retried: five attempts, all refused).
    attempts = 5 if status == 500 else 1
    assert len(_attributes_requests(fake)) == attempts
    assert all(r.query["count"] == "50" for r in _attributes_requests(fake))
    assert all("attributes" not in r.query for r in _listing_requests(fake))
    assert _warnings(caplog) == []
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("the server refused attributes=" in m for m in infos)


def test_scim_error_body_with_status_200_counts_as_a_refusal() -> None:
    error = {"schemas": [ERROR_SCHEMA], "status": "400", "detail": "no attributes"}
    with FakeScim(USERS, GROUPS) as fake:
        fake.fail(
            Fault(
                status=200,
                body=error,
                path="/Users",
                when=lambda request: "attributes" in request.query,
                times=None,
            )
        )
        reading = read_fake(fake, ON)
        lines = _check_lines(fake)

    assert reading.attributes["u2"]["familyName"] == "Family2"
    assert all("attributes" not in r.query for r in _listing_requests(fake))
    assert _attribute_lines(lines) == [
        "user attributes: whole users (server refused attributes=)"
    ]


@pytest.mark.parametrize(
    ("dropped", "named"),
    [
        ("name", "(familyName, givenName)"),
        ("emails", "(email)"),
        ("groups", "(groups)"),
        (ENTERPRISE, "(costCenter, department, division, employeeNumber, "),
    ],
)
def test_narrowed_answer_that_loses_data_is_not_used(
    dropped: str, named: str, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeScim(
        USERS, GROUPS, user_groups=True, narrowed_drops=frozenset({dropped})
    ) as fake:
        reading = read_fake(fake, ON)
    with FakeScim(USERS, GROUPS, user_groups=True) as whole:
        reference = read_fake(whole, OFF)

    (warning,) = _warnings(caplog)
    assert warning.startswith(
        "The server's answer with attributes= differs from the whole user u1 "
    )
    assert named in warning
    assert warning.endswith("; reading whole users")
    assert "Given1" not in warning  # names of attributes, never their values
    assert reading == reference
    assert reading.attributes["u4"]["givenName"] == "Given4"
    assert reading.attributes["u4"]["email"] == "p4@example.test"
    assert ("u3", "g2", "direct") in reading.relationships
    assert len(_attributes_requests(fake)) == 1
    assert all("attributes" not in r.query for r in _listing_requests(fake))


def test_narrowed_answer_without_a_sampled_user_is_not_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    everyone = list(USERS)

    def hide_first(fake: FakeScim, request: RecordedRequest) -> None:
        # A server whose narrowed answer leaves out a user the whole one has.
        fake.users[:] = everyone[1:] if "attributes" in request.query else everyone

    with FakeScim(USERS, GROUPS, on_request=hide_first) as fake:
        reading = read_fake(fake, ON)

    assert _warnings(caplog) == [
        "The server's answer with attributes= differs from the whole user u1 "
        "(another user); reading whole users"
    ]
    assert sorted(reading.users) == [f"u{n}" for n in range(1, 8)]
    assert all("attributes" not in r.query for r in _listing_requests(fake))


def test_narrowed_answer_in_another_order_is_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def reorder(fake: FakeScim, request: RecordedRequest) -> None:
        # A server whose order depends on the query: users are matched by id.
        fake.users.sort(key=lambda u: u["id"], reverse="attributes" in request.query)

    with FakeScim(USERS, GROUPS, on_request=reorder) as fake:
        reading = read_fake(fake, ON)
    with FakeScim(USERS, GROUPS) as whole:
        reference = read_fake(whole, OFF)

    assert _warnings(caplog) == []
    assert sorted(reading.users) == reference.users
    assert reading.relationships == reference.relationships
    assert reading.attributes == reference.attributes
    assert all(r.query.get("attributes") for r in _listing_requests(fake))


def test_an_attribute_the_first_user_lacks_is_still_checked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The first user (an admin, say) has no manager and no enterprise extension; a
    # server that drops the extension when narrowing must still be caught, by the
    # users after it in the sample.
    first = {k: v for k, v in USERS[0].items() if k != ENTERPRISE}
    users = [first, *USERS[1:]]
    with FakeScim(
        users, GROUPS, narrowed_drops=frozenset({ENTERPRISE.lower()})
    ) as fake:
        reading = read_fake(fake, ON)

    (warning,) = _warnings(caplog)
    assert warning.startswith(
        "The server's answer with attributes= differs from the whole user u2 ("
    )
    assert "managerId" in warning
    assert "department" in warning
    assert reading.attributes["u5"]["department"] == "Platform"
    assert reading.attributes["u5"]["managerId"] == "u1"
    assert all("attributes" not in r.query for r in _listing_requests(fake))


def test_empty_directory_sends_no_attributes() -> None:
    with FakeScim([], []) as fake:
        reading = read_fake(fake, ON)
        lines = _check_lines(fake)

    assert reading.users == []
    assert _attributes_requests(fake) == []
    assert _attribute_lines(lines) == [
        "user attributes: whole users (no user to compare)"
    ]


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda fake: None, "narrowed with attributes="),
        (
            lambda fake: fake.fail(_refuses(400)),
            "whole users (server refused attributes=)",
        ),
        (
            lambda fake: setattr(fake, "narrowed_drops", frozenset({"name"})),
            "whole users (narrowed answer differs)",
        ),
    ],
    ids=["narrowed", "refused", "differs"],
)
def test_check_reports_how_users_would_be_read(
    setup: Callable[[FakeScim], object], expected: str
) -> None:
    with FakeScim(USERS, GROUPS) as fake:
        setup(fake)
        lines = _check_lines(fake)
        off = _check_lines(fake, OFF)

    assert _attribute_lines(lines) == [f"user attributes: {expected}"]
    # Right after the paging line.
    assert lines.index(f"user attributes: {expected}") == 3
    assert _attribute_lines(off) == [
        "user attributes: whole users (requestAttributes off)"
    ]


def test_wrong_credentials_fail_on_the_probe() -> None:
    with (
        FakeScim(USERS, GROUPS, bearer_token="right") as fake,
        pytest.raises(ScimAuthError, match="status 401") as caught,
    ):
        read_fake(fake, ON, password="wrong")

    assert caught.value.status == 401
    assert "authentication failed" in str(caught.value)
    # The very first request to /Users was the probe, and it failed the run.
    (request,) = fake.requests_to("/Users")
    assert request.query == {"startIndex": "1", "count": "50"}


def test_401_on_the_narrowed_probe_alone_is_a_refusal() -> None:
    # The same credentials were just accepted for the whole users: a 401 to the
    # narrowed request is this server's way of refusing the parameter.
    with FakeScim(USERS, GROUPS) as fake:
        fake.fail(
            Fault(
                status=401,
                body=b"token expired",
                content_type="text/plain",
                path="/Users",
                when=lambda request: "attributes" in request.query,
                times=None,
            )
        )
        reading = read_fake(fake, ON)
        lines = _check_lines(fake)
    with FakeScim(USERS, GROUPS) as whole:
        reference = read_fake(whole, OFF)

    assert reading == reference
    assert [r.query.get("attributes") for r in fake.requests_to("/Users")][:3] == [
        None,
        USER_ATTRIBUTES,
        None,
    ]
    assert _attribute_lines(lines) == [
        "user attributes: whole users (server refused attributes=)"
    ]


# -- A real SCIM server ----------------------------------------------------------


def _connector(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": os.environ.get("PATH", ""), "ELIMITY_LOG_LEVEL": "INFO", **env}
    return subprocess.run(
        [CONNECTOR, *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_scim2_server_honours_attributes_and_the_snapshot_is_the_same(
    make_scim2_server: MakeScim2Server, tmp_path: Path
) -> None:
    directory = example_directory(users=25, groups=5, seed=7)
    for n, resource in enumerate(directory.users.values()):
        # Attributes the import does not map: the narrowed listing leaves them out.
        resource["nickName"] = f"nick{n}"
        resource["phoneNumbers"] = [{"value": f"+32 2 000 00 {n:02}", "type": "work"}]
    server = make_scim2_server(directory, bearer_tokens=[BEARER_TOKEN])
    env = {
        "ELIMITY_SCIM_BASE_URL": server.base_url,
        "ELIMITY_SCIM_PASSWORD": BEARER_TOKEN,
        "ELIMITY_SCIM_PAGE_SIZE": "10",
    }
    outputs = {}
    user_queries: dict[str, list[dict[str, str]]] = {}
    for setting in ("true", "false"):
        server.requests.clear()
        output = tmp_path / f"{setting}.json"
        result = _connector(
            "run",
            "scim",
            "--output",
            str(output),
            env={**env, "ELIMITY_SCIM_REQUEST_ATTRIBUTES": setting},
        )
        assert result.returncode == 0, result.stderr
        outputs[setting] = output.read_bytes()
        user_queries[setting] = [
            {k: v[-1] for k, v in parse_qs(urlsplit(target).query).items()}
            for method, target in server.requests
            if urlsplit(target).path.endswith("/Users")
        ]
    checked = _connector("check", "scim", env=env)

    assert outputs["true"] == outputs["false"]
    snapshot = json.loads(outputs["true"])
    users = [e for e in snapshot["entities"] if e["type"] == "user"]
    assert len(users) == 25
    on, off = user_queries["true"], user_queries["false"]
    assert [q.get("attributes") for q in on[:2]] == [None, USER_ATTRIBUTES]
    assert len(on[2:]) >= 3
    assert all(q["attributes"] == USER_ATTRIBUTES for q in on[2:])
    assert all("attributes" not in q for q in off)
    assert checked.returncode == 0, checked.stderr
    assert "user attributes: narrowed with attributes=\n" in checked.stdout

    # What scim2-server does with the parameter: it honours it, leaving out what
    # was not asked for and keeping everything that was.
    with server.session() as session:
        url = f"{server.base_url}/Users"
        query = {"startIndex": 1, "count": 3}
        whole = session.get(url, params=query, timeout=30).json()["Resources"]
        narrowed = session.get(
            url, params={**query, "attributes": USER_ATTRIBUTES}, timeout=30
        ).json()["Resources"]
    assert [r["id"] for r in narrowed] == [r["id"] for r in whole]
    for full, part in zip(whole, narrowed, strict=True):
        assert "nickName" in full
        assert "phoneNumbers" in full
        assert {
            k: v for k, v in full.items() if k not in ("nickName", "phoneNumbers")
        } == part


def test_the_fake_narrows_as_scim2_server_does() -> None:
    # The probe above compares a really narrowed answer, not the same bytes twice.
    with FakeScim(USERS, GROUPS) as fake:
        url = f"{fake.base_url}/Users"
        query = {"startIndex": 1, "count": 1}
        (whole,) = requests.get(url, params=query, timeout=10).json()["Resources"]
        (narrowed,) = requests.get(
            url, params={**query, "attributes": USER_ATTRIBUTES}, timeout=10
        ).json()["Resources"]

    assert whole["nickName"] == "nick1"
    left_out = {"nickName", "phoneNumbers"}
    assert narrowed == {k: v for k, v in whole.items() if k not in left_out}


def test_a_transient_failure_of_the_probe_is_retried() -> None:
    with FakeScim(USERS, GROUPS) as fake:
        fake.fail(Fault(status=503, path="/Users", times=2))
        reading = read_fake(fake, ON)

    assert len(reading.users) == 7
    assert len(_probe_requests(fake)) == 4  # 503, 503, whole, narrowed
    listing = _listing_requests(fake)
    assert all(r.query["attributes"] == USER_ATTRIBUTES for r in listing)


def test_a_server_failing_every_listing_is_not_asked_twice_as_long() -> None:
    # The probe's first request is the listing's own, for one user: its failure is
    # the listing's, not a reason to try again without the probe.
    with FakeScim(USERS, GROUPS) as fake:
        fake.fail(scim_error(500, "broken", path="/Users", times=None))
        with pytest.raises(ScimRequestError, match=r"status 500 \(gave up after 5"):
            read_fake(fake, ON)

    assert len(fake.requests_to("/Users")) == 5
    assert _attributes_requests(fake) == []
