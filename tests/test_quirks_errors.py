"""Transport and error quirks (SCIM-QUIRKS 11 to 13): retries, content types, errors."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from elimity_scim.connector.cli import main
from elimity_scim.errors import (
    ScimAuthError,
    ScimConnectorError,
    ScimPayloadError,
    ScimRequestError,
)
from tests.support.fake_scim import (
    FakeScim,
    Fault,
    Resource,
    group,
    http_date,
    member,
    read_fake,
    scim_error,
    user,
)

URL = r"http://127\.0\.0\.1:\d+/scim/v2"
TOKEN = "S3cr3t-T0ken-of-the-fake"
BASIC = ("alice.fake", "B4sic-Pa55word-of-the-fake")


def _users() -> list[Resource]:
    return [user("u1"), user("u2")]


def _groups() -> list[Resource]:
    return [group("g1", [member("u1", "User"), member("u2", "User")])]


def _first_pages(fake: FakeScim) -> int:
    return len([r for r in fake.requests_to("/Users") if r.query["startIndex"] == "1"])


def _chain(error: BaseException) -> Iterator[BaseException]:
    current: BaseException | None = error
    while current is not None:
        yield current
        current = current.__cause__ or current.__context__


# -- 11. Rate limits and transient failures ---------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=429, headers={"Retry-After": "0"}),
        Fault(status=429, headers={"Retry-After": http_date(-60)}),
        Fault(status=429, headers={"Retry-After": "soon"}),
        Fault(status=429),
        scim_error(500, "REQUEST_LIMIT_EXCEEDED"),
        Fault(status=502, body="Bad gateway", content_type="text/plain"),
        scim_error(503, "Service busy", headers={"Retry-After": "0"}),
        Fault(status=504, body=b"", content_type=None),
        Fault(action="drop"),
        Fault(action="truncate", status=200, body={"Resources": [{"id": "x"}]}),
    ],
    ids=[
        "429-seconds",
        "429-past-http-date",
        "429-unreadable",
        "429-bare",
        "500-limit",
        "502",
        "503",
        "504",
        "dropped",
        "cut-short",
    ],
)
def test_transient_failures_are_retried(fault: Fault) -> None:
    fault.path, fault.times = "/Users", 2
    with FakeScim(_users(), _groups()) as fake:
        fake.fail(fault)
        reading = read_fake(fake, "retryAttempts=3")

    assert reading.users == ["u1", "u2"]
    assert reading.relationships == [("u1", "g1", "direct"), ("u2", "g1", "direct")]
    assert _first_pages(fake) == 3


def test_retry_after_http_date_is_honoured() -> None:
    with FakeScim(_users()) as fake:
        fake.fail(
            Fault(status=429, headers={"Retry-After": http_date(2)}, path="/Users")
        )
        started = time.monotonic()
        reading = read_fake(fake)
        waited = time.monotonic() - started

    assert reading.users == ["u1", "u2"]
    assert _first_pages(fake) == 2
    assert waited >= 0.9


@pytest.mark.parametrize(
    ("fault", "asked"),
    [
        (
            Fault(status=429, headers={"Retry-After": "3600"}, times=None),
            "3600 s, longer than the configured maximum of 5 s",
        ),
        (
            Fault(status=503, headers={"Retry-After": "600"}, times=None),
            "600 s, longer than the configured maximum of 5 s",
        ),
        (
            Fault(status=429, headers={"Retry-After": http_date(3600)}, times=None),
            # The date is fixed when the tests are collected; the suite may take
            # minutes before this one runs, so only the order of magnitude counts.
            r"[1-3]\d\d\d s, longer than the configured maximum of 5 s",
        ),
    ],
    ids=["429-seconds", "503-seconds", "429-http-date"],
)
def test_retry_after_beyond_the_maximum_fails_at_once(fault: Fault, asked: str) -> None:
    fault.path = "/Users"
    with FakeScim(_users()) as fake:
        fake.fail(fault)
        with pytest.raises(
            ScimRequestError,
            match=(
                rf"^SCIM request to {URL}/Users failed with status {fault.status} "
                rf"\(the server asked to wait {asked}\)$"
            ),
        ):
            read_fake(fake)

    assert _first_pages(fake) == 1


def test_retry_after_max_setting_is_the_limit() -> None:
    # retryAfterMax=1: a Retry-After of 2 s is longer than allowed.
    with FakeScim(_users()) as fake:
        fake.fail(Fault(status=429, headers={"Retry-After": "2"}, path="/Users"))
        with pytest.raises(
            ScimRequestError,
            match=(
                rf"^SCIM request to {URL}/Users failed with status 429 \(the server "
                r"asked to wait 2 s, longer than the configured maximum of 1 s\)$"
            ),
        ):
            read_fake(fake, "retryAfterMax=1", "retryAttempts=2")

    assert _first_pages(fake) == 1


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        (
            scim_error(500, "REQUEST_LIMIT_EXCEEDED"),
            r"status 500 \(gave up after 3 attempts\): REQUEST_LIMIT_EXCEEDED",
        ),
        (
            Fault(status=502, body="Bad gateway", content_type="text/plain"),
            r"status 502 \(gave up after 3 attempts\): Bad gateway",
        ),
        (
            scim_error(503, "Service busy", headers={"Retry-After": "0"}),
            r"status 503 \(gave up after 3 attempts\): Service busy",
        ),
        (
            Fault(status=504, body=b"", content_type=None),
            r"status 504 \(gave up after 3 attempts\)",
        ),
        (
            Fault(status=429, headers={"Retry-After": "0"}),
            r"status 429 \(gave up after 3 attempts\)",
        ),
        (
            Fault(action="drop"),
            "no response: the server closed the connection without answering",
        ),
        (
            Fault(action="truncate", status=200, body={"Resources": [{"id": "x"}]}),
            "no response: the response was cut short",
        ),
    ],
    ids=["500", "502", "503", "504", "429", "dropped", "cut-short"],
)
def test_persistent_failures_give_up_after_retry_attempts(
    fault: Fault, outcome: str
) -> None:
    fault.path, fault.times = "/Users", None
    with FakeScim(_users()) as fake:
        fake.fail(fault)
        with pytest.raises(
            ScimRequestError,
            match=rf"^SCIM request to {URL}/Users failed with {outcome}$",
        ):
            read_fake(fake, "retryAttempts=3")

    assert _first_pages(fake) == 3


def test_a_stalled_server_times_out_with_a_readable_reason() -> None:
    with FakeScim(_users()) as fake:
        fake.fail(Fault(action="stall", seconds=3, path="/Users", times=None))
        with pytest.raises(
            ScimRequestError,
            match=rf"^SCIM request to {URL}/Users failed with no response: .*time",
        ):
            read_fake(fake, "retryAttempts=2", "requestTimeout=1")

    assert _first_pages(fake) == 2


def test_a_body_that_stalls_midway_is_retried() -> None:
    with FakeScim(_users()) as fake:
        fake.fail(
            Fault(
                action="stall_body",
                seconds=3,
                status=200,
                body={"Resources": [{"id": "x"}]},
                path="/Users",
            )
        )
        reading = read_fake(fake, "retryAttempts=2", "requestTimeout=1")

    assert reading.users == ["u1", "u2"]
    assert _first_pages(fake) == 2


@pytest.mark.parametrize(
    ("fault", "error", "message"),
    [
        (
            scim_error(400, "Invalid startIndex", "invalidValue"),
            ScimRequestError,
            r"status 400: Invalid startIndex",
        ),
        (
            Fault(
                status=401,
                body="Invalid credentials\n",
                content_type="text/plain",
                headers={"WWW-Authenticate": 'Bearer realm="fake", error="x"'},
            ),
            ScimAuthError,
            r"status 401 \(authentication failed: check the username and password or "
            r"token\): Invalid credentials",
        ),
        (
            Fault(status=403, body={"code": "forbidden", "message": "Missing scope"}),
            ScimAuthError,
            r"status 403 \(authorization failed: the credentials lack the rights to "
            r"read\): Missing scope",
        ),
        (
            scim_error(404, "No such page"),
            ScimRequestError,
            r"status 404: No such page",
        ),
    ],
    ids=["400", "401", "403", "404"],
)
def test_client_errors_are_not_retried(
    fault: Fault, error: type[Exception], message: str
) -> None:
    fault.path, fault.times = "/Users", None
    with FakeScim(_users()) as fake:
        fake.fail(fault)
        with pytest.raises(
            error, match=rf"^SCIM request to {URL}/Users failed with {message}$"
        ):
            read_fake(fake, "retryAttempts=5")

    assert len(fake.requests_to("/Users")) == 1


def test_wrong_credentials_fail_once_without_retry() -> None:
    with (
        FakeScim(_users(), bearer_token=TOKEN) as fake,
        pytest.raises(
            ScimAuthError,
            match=(
                rf"^SCIM request to {URL}/Users failed with status 401 "
                r"\(authentication failed: check the username and password or "
                r"token\): Unauthorized$"
            ),
        ),
    ):
        read_fake(fake, password="not-the-token")

    assert len(fake.requests_to("/Users")) == 1
    assert fake.requests_to("/Users")[0].headers["authorization"] == (
        "Bearer not-the-token"
    )


@pytest.mark.parametrize("mode", ["bearer", "basic"])
def test_right_credentials_are_sent(mode: str) -> None:
    if mode == "bearer":
        fake = FakeScim(_users(), bearer_token=TOKEN)
        credentials: dict[str, str] = {"password": TOKEN}
    else:
        fake = FakeScim(_users(), basic=BASIC)
        credentials = {"username": BASIC[0], "password": BASIC[1]}
    with fake:
        reading = read_fake(fake, **credentials)

    assert reading.users == ["u1", "u2"]


# -- 12. Content types ----------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/scim+json",
        "application/scim+json; charset=utf-8",
        "application/json",
        "application/json; charset=UTF-8",
        "application/json+scim",
        "text/json; charset=utf-8",
        "text/plain",
    ],
)
def test_any_json_on_2xx_is_read(content_type: str) -> None:
    with FakeScim(_users(), _groups(), content_type=content_type) as fake:
        reading = read_fake(fake)

    assert reading.users == ["u1", "u2"]
    assert reading.groups == ["g1"]
    assert reading.relationships == [("u1", "g1", "direct"), ("u2", "g1", "direct")]


LOGIN_PAGE = "<!DOCTYPE html>\n<html><body><form>Sign in</form></body></html>\n"


@pytest.mark.parametrize(
    "content_type", ["text/html; charset=utf-8", "application/json", None]
)
def test_html_login_page_with_200_is_an_error(content_type: str | None) -> None:
    shown = content_type or "no Content-Type"
    with FakeScim(_users()) as fake:
        fake.fail(Fault(status=200, body=LOGIN_PAGE, content_type=content_type))
        fake.faults[0].times = None
        with pytest.raises(
            ScimPayloadError,
            match=(
                rf"^the response of {URL}/Users \(status 200, {shown}\) is an HTML "
                r"page, not SCIM JSON; is the base URL right, or is a login page in "
                r"the way\?$"
            ),
        ):
            read_fake(fake)


@pytest.mark.parametrize("body", ["[]", "null", "42", '"Users"', '[{"id": "u1"}]'])
def test_json_that_is_not_an_object_is_an_error(body: str) -> None:
    with FakeScim(_users()) as fake:
        fake.fail(Fault(status=200, body=body, path="/Users"))
        with pytest.raises(
            ScimPayloadError,
            match=(
                rf"^the response of {URL}/Users \(application/scim\+json\) is JSON "
                r"but not an object$"
            ),
        ):
            read_fake(fake)


def test_broken_json_is_an_error() -> None:
    with FakeScim(_users()) as fake:
        fake.fail(Fault(status=200, body='{"Resources": [', path="/Users"))
        with pytest.raises(
            ScimPayloadError,
            match=(
                rf"^the response of {URL}/Users \(status 200, application/scim\+json\)"
                r" is not valid JSON$"
            ),
        ):
            read_fake(fake)


def test_resources_that_are_not_a_list_are_an_error() -> None:
    with FakeScim(_users()) as fake:
        fake.fail(Fault(status=200, body={"Resources": {"id": "u1"}}, path="/Users"))
        with pytest.raises(
            ScimPayloadError,
            match=rf"^the list response of {URL}/Users has no Resources array$",
        ):
            read_fake(fake)


# -- 13. Error bodies that are not SCIM ------------------------------------------


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (scim_error(400, "Invalid filter syntax", "invalidFilter"), "Invalid filter "),
        (
            Fault(
                status=403, body={"code": 40301, "message": "Scope scim:read needed"}
            ),
            "Scope scim:read needed",
        ),
        (Fault(status=401, body={"error": "invalid_token"}), "invalid_token"),
        (
            Fault(
                status=401,
                body={"error": "invalid_token", "error_description": "Token expired"},
            ),
            "Token expired",
        ),
        (
            Fault(status=500, body={"error": {"code": 500, "message": "DB offline"}}),
            "DB offline",
        ),
        (
            Fault(status=503, body={"errors": [{"detail": "Maintenance window"}]}),
            "Maintenance window",
        ),
        (
            Fault(
                status=400,
                body={"Errors": {"description": "invalid_filter", "code": 400}},
            ),
            "invalid_filter",
        ),
        (
            Fault(
                status=401,
                body="Unauthorized: token\r\nexpired\n\n",
                content_type="text/plain",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            ),
            "Unauthorized: token expired",
        ),
        (
            Fault(
                status=502,
                body="<html><head><title>502</title></head><body>nginx</body></html>",
                content_type="text/html",
            ),
            "the server answered with an HTML page",
        ),
    ],
    ids=[
        "scim-detail",
        "code-message",
        "error",
        "error-description",
        "nested-error-object",
        "errors-list",
        "slack-style",
        "plain-text",
        "html",
    ],
)
def test_error_bodies_give_a_one_line_reason(fault: Fault, reason: str) -> None:
    fault.path, fault.times = "/Users", None
    with FakeScim(_users()) as fake:
        fake.fail(fault)
        url = f"{fake.base_url}/Users"
        with pytest.raises(ScimRequestError) as caught:
            read_fake(fake, "retryAttempts=1")

    message = str(caught.value)
    assert message.startswith(
        f"SCIM request to {url} failed with status {fault.status}"
    )
    assert reason in message
    assert "\n" not in message
    assert "\r" not in message
    assert "?" not in message
    assert caught.value.status == fault.status


# -- Secrets never appear in error messages ---------------------------------------


SECRET_FAULTS = {
    "401": Fault(status=401, body="no", content_type="text/plain"),
    "403": Fault(status=403, body={"message": "forbidden"}),
    "500": scim_error(500, "oops"),
    "429-too-long": Fault(status=429, headers={"Retry-After": "999"}),
    "dropped": Fault(action="drop"),
    "cut-short": Fault(action="truncate", status=200, body={"Resources": []}),
    "html": Fault(status=200, body=LOGIN_PAGE, content_type="text/html"),
    "not-object": Fault(status=200, body="[]"),
    "broken-paging": Fault(status=200, body={"Resources": [{"id": "u1"}]}),
}


@pytest.mark.parametrize("kind", list(SECRET_FAULTS))
@pytest.mark.parametrize("mode", ["bearer", "basic"])
def test_no_error_message_contains_a_secret(kind: str, mode: str) -> None:
    fault = dataclasses.replace(SECRET_FAULTS[kind], path="/Users", times=None)
    with FakeScim([user("u1"), user("u2"), user("u3")], page_cap=1) as fake:
        if mode == "bearer":
            fake.bearer_token = TOKEN
            credentials = {"password": TOKEN}
        else:
            fake.basic = BASIC
            credentials = {"username": BASIC[0], "password": BASIC[1]}
        fake.fail(fault)
        with pytest.raises(ScimConnectorError) as caught:
            read_fake(fake, "retryAttempts=2", **credentials)

    encoded = base64.b64encode(f"{BASIC[0]}:{BASIC[1]}".encode()).decode()
    for error in _chain(caught.value):
        for text in (str(error), repr(error)):
            assert TOKEN not in text
            assert BASIC[1] not in text
            assert encoded not in text


def test_a_secret_echoed_by_the_server_is_not_repeated() -> None:
    with FakeScim(_users(), bearer_token=TOKEN) as fake:
        fake.fail(
            Fault(
                status=403,
                body={"detail": f"token {TOKEN} may not read /Users"},
                path="/Users",
            )
        )
        with pytest.raises(ScimAuthError, match="may not read") as caught:
            read_fake(fake, password=TOKEN)

    assert TOKEN not in str(caught.value)


# -- Exit codes of the command line ----------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    for name in ("ELIMITY_INSIGHTS_URL", "ELIMITY_SOURCE_ID", "ELIMITY_INSIGHTS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ELIMITY_LOG_LEVEL", raising=False)
    monkeypatch.setenv("ELIMITY_SCIM_PASSWORD", TOKEN)
    yield monkeypatch
    root.handlers[:] = handlers
    root.setLevel(level)


def _run(fake: FakeScim, env: pytest.MonkeyPatch, output: Path, *sets: str) -> int:
    env.setenv("ELIMITY_SCIM_BASE_URL", fake.base_url)
    arguments = ["run", "scim", "--output", str(output)]
    for setting in ("retryBackoffMs=0", "retryAfterMax=5", "requestTimeout=2", *sets):
        arguments += ["--set", setting]
    return main(arguments)


def test_cli_writes_the_snapshot(cli_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    output = tmp_path / "snapshot.json"
    with FakeScim(_users(), _groups(), bearer_token=TOKEN, page_cap=1) as fake:
        code = _run(fake, cli_env, output)

    assert code == 0
    snapshot = json.loads(output.read_text())
    assert [e["id"] for e in snapshot["entities"]] == ["u1", "u2", "g1"]
    assert [
        (r["fromEntityId"], r["toEntityId"]) for r in snapshot["relationships"]
    ] == [("u1", "g1"), ("u2", "g1")]


NO_MEMBERSHIPS = {
    "list_members": "empty",
    "get_members": "omit",
    "filter_users_by_group": False,
    "filter_groups_by_member": False,
}


@pytest.mark.parametrize(
    ("fault", "knobs", "code"),
    [
        (Fault(status=401, body="Bad token", content_type="text/plain"), {}, 3),
        (Fault(status=403, body={"message": "No"}), {}, 3),
        (scim_error(500, "REQUEST_LIMIT_EXCEEDED"), {}, 4),
        (Fault(action="drop"), {}, 4),
        (Fault(status=200, body=LOGIN_PAGE, content_type="text/html"), {}, 4),
        (None, {"ignore_start_index": True}, 4),
        (None, NO_MEMBERSHIPS, 4),
    ],
    ids=["401", "403", "500", "dropped", "html", "paging-broken", "no-memberships"],
)
def test_cli_exit_codes(
    fault: Fault | None,
    knobs: dict[str, Any],
    code: int,
    cli_env: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    output = tmp_path / "snapshot.json"
    users = [user("u1"), user("u2"), user("u3")]
    with FakeScim(users, _groups(), page_cap=2, **knobs) as fake:
        if fault is not None:
            fault.path, fault.times = "/Users", None
            fake.fail(fault)
        assert _run(fake, cli_env, output, "retryAttempts=2") == code

    assert not output.exists()
    assert list(tmp_path.iterdir()) == []
    errors = [
        line for line in capsys.readouterr().err.splitlines() if " ERROR " in line
    ]
    assert len(errors) == 1


def test_cli_never_prints_a_secret_the_server_echoes(
    cli_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeScim(_users()) as fake:
        fake.fail(
            Fault(
                status=401,
                body=f"Bearer {TOKEN} is not valid here",
                content_type="text/plain",
                path="/Users",
            )
        )
        code = _run(fake, cli_env, tmp_path / "out.json")

    assert code == 3
    captured = capsys.readouterr()
    assert TOKEN not in captured.err + captured.out
    assert "[redacted] is not valid here" in captured.err
